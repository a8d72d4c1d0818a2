"""What turns result frames into the report: the report itself, verdicts, run diffs, the listening test kit. Imports
lib.core only (it reads outputs/), and no package of lib imports it."""
