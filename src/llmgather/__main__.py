from llmgather.cli import main

main()
