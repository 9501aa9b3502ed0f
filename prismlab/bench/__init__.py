"""`prismlab bench`: studies that train, measure and write benchmarks/results/<study>-<tier>.{json,md}."""


def run_bench(args) -> None:
    from prismlab.bench import infer, speed, task1, task2
    from prismlab.errors import ConfigError

    if not getattr(args, "runs_dir", None):
        from prismlab.data.cache import default_cache_dir

        args.runs_dir = str(default_cache_dir() / "bench-runs")
    if args.steps and args.study == "task1":
        raise ConfigError("--steps applies to the task2, speed and infer studies (task1 times nothing)")
    {"task1": task1.run, "task2": task2.run, "speed": speed.run, "infer": infer.run}[args.study](args)
