from .command import console_main

console_main()
