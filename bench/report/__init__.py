"""The performance report: every benchmark of the project in one run, as Markdown and plots.

`python -m bench.report [--out docs/performance] [--quick]` (`make report`) runs the HTTP
concurrency sweep (bench.report.sweep) and the other benchmarks (bench.report.suite), then
writes docs/performance/README.md, its PNG plots and results.json (bench.report.write).
"""
