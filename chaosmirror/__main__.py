from chaosmirror.cli import main

main()
