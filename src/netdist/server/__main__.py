from netdist.server.cli import main

main()
