"""Ways to look at an address space: the ``vmmap`` table (and the HTML report).

Top layer: reads the manager's public queries, nothing below depends on it.
"""
