from iwu.cli import main

raise SystemExit(main())
