from mpjobs.cli import main

raise SystemExit(main())
