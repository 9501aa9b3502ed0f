"""`prismlab bench`: studies that train, measure and write benchmarks/results/<study>-<tier>.{json,md}."""


def run_bench(args) -> None:
    from prismlab.bench import speed, task1, task2

    {"task1": task1.run, "task2": task2.run, "speed": speed.run}[args.study](args)
