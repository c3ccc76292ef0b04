"""Low-level helpers every other part of medgen may use (and which import no other part).

errors, atomic file writing, device selection, the package version, volume
intensity/spacing rules, table formatting and process measurements: each
written once, here.
"""
