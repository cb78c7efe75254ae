from qrecipe.cli import main

main()
