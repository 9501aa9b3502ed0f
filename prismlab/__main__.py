from prismlab.cli import main

raise SystemExit(main())
