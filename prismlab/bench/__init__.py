"""`prismlab bench`: studies that train, measure and write benchmarks/results/<study>-<tier>.{json,md}."""


def run_bench(study: str, args) -> None:
    """Run one study (task1, task2, speed, infer, frontier, seeds) with its arguments (a bench.common.StudyArgs)."""
    from prismlab.bench import frontier, infer, seeds, speed, task1, task2
    from prismlab.errors import ConfigError

    if args.steps and study in ("task1", "seeds"):
        raise ConfigError(f"--steps applies to the task2, speed and infer studies ({study} times nothing)")
    if args.recipe and study != "task2":
        raise ConfigError("--recipe applies to the task2 study only")
    if args.size and study != "task2":
        raise ConfigError("--size applies to the task2 study only")
    if args.against and study != "task2":
        raise ConfigError("--against applies to the task2 study only")

    {"task1": task1.run, "task2": task2.run, "speed": speed.run, "infer": infer.run, "frontier": frontier.run,
     "seeds": seeds.run}[study](args)
