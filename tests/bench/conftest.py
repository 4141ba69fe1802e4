"""The benchmarks' own tests: the bench runner, its merge and quality checks, step traces and
their replay, and the GPU benchmark's CPU smoke run (toy shapes, the same code path the device
runs). Speed is never asserted here; the benchmarks print and write it."""
