from harness.study.cli import main

main()
