from bench.weights.cli import main

raise SystemExit(main())
