"""Ways to look at an address space: the ``vmmap`` table and the HTML report.

Top layer: reads the manager's public queries and the runner's results; nothing below
depends on it. For the HTML report, :mod:`.model` is the plain data, :mod:`.render` the pure
function that turns it into one self-contained file, :mod:`.collect` fills the data from a
live process and :mod:`.history` records what happened while it ran.
"""
