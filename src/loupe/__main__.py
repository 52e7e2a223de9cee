from loupe.cli import console

console()
