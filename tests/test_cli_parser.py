"""`ottava`'s parser reads the same whether or not the operator's package is loaded.

`ottava run` builds it without the operator (a sidecar's start-up does not import it),
with an `operator` entry of the same help line: usage and errors must not differ.
"""

import ottava_cli


def test_run_parser_lists_the_operator_as_the_full_parser_does() -> None:
    full = ottava_cli.build_parser().format_help()
    for_run = ottava_cli.build_parser(with_operator=False).format_help()
    assert for_run == full
    assert "run the operator" in full
