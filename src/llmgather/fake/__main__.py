from llmgather.fake.main import main

main()
