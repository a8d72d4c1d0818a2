"""What turns result frames into the report: the answers per technique, the listening strip, the technique sections
and the folded appendix, verdicts, run diffs, the listening test kit. Imports lib.core only (it reads outputs/), and
no package of lib imports it."""
