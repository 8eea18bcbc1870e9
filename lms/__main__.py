from lms.cli import main

main()
