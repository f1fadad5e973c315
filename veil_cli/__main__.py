from veil_cli.main import main

raise SystemExit(main())
