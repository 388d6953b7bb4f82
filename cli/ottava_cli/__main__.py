from ottava_cli import main

raise SystemExit(main())
