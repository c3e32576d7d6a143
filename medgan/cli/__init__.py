"""The ``medgan`` command line: thin click commands that parse options and call the library.

Heavy imports (torch, MONAI) happen inside the commands, after every option, path and config
has been checked, so ``medgan --help`` and input errors are instant. Every
:class:`~medgan.errors.MedganError` becomes one ``Error: ...`` line (parameters spelt as the
flags that set them) and exit code 2; Ctrl-C gives exit code 130 and SIGTERM 143.
"""

from medgan.cli.app import main, user_message
from medgan.cli.evaluate import evaluate_group

main.add_command(evaluate_group)

__all__ = ["main", "user_message"]

if __name__ == "__main__":  # pragma: no cover
    main()
