from sensorcast.agent.cli import main

raise SystemExit(main())
