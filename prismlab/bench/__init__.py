"""`prismlab bench`: studies that train or read runs and write benchmarks/results/<study>.{json,md}.

A study is a preset plus a table of rows (key -> model and overrides); common.train_or_reuse trains
or reuses each row's run and the row is read from what the run wrote; results.py holds the one
provenance header, the writer, targets and the column-spec tables; cli.py gives each study its parser."""
