"""`prismlab bench`: studies that train, measure and write benchmarks/results/<study>-<tier>.{json,md}."""


def run_bench(study: str, args) -> None:
    """Run one study (task1, task2, speed, infer) with its arguments (a bench.common.StudyArgs)."""
    from prismlab.bench import frontier, infer, speed, task1, task2
    from prismlab.errors import ConfigError

    if args.steps and study == "task1":
        raise ConfigError("--steps applies to the task2, speed and infer studies (task1 times nothing)")
    if args.recipe and study != "task2":
        raise ConfigError("--recipe applies to the task2 study only")
    if args.size and study != "task2":
        raise ConfigError("--size applies to the task2 study only")
    if args.against and study != "task2":
        raise ConfigError("--against applies to the task2 study only")

    {"task1": task1.run, "task2": task2.run, "speed": speed.run, "infer": infer.run, "frontier": frontier.run}[study](args)
