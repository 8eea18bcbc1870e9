from lms.daemon.main import main

raise SystemExit(main())
