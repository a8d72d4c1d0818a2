"""The only code that measures: metrics, judges, timing (bench), the variant evaluation and the benchmark scenarios.
Imports every package below it (core to runtimes), never jobs or report."""
