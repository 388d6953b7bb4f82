from ottava_sidecar.cli import main

raise SystemExit(main())
