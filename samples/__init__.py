"""Sample x86 payloads (``src/*.asm``), their committed builds (``bin/*.exe``), the expected
console output of each (``expected/*.txt``) and the build script (:mod:`samples.build`)."""
