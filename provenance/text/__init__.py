"""Pure text helpers: normalise, tokenise, segment, shingle. No I/O, no database."""
