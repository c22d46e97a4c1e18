"""Browser key names (``KeyboardEvent.key``) and characters to X11 keysyms, the keys of RFB
KeyEvents. The table follows the W3C UI Events key names, as noVNC's ``domkeytable.js`` maps
them at their standard location; docs/protocol.md lists it."""

from __future__ import annotations

SHIFT = 0xFFE1

#: Named keys (``KeyboardEvent.key``) → keysym.
NAMED: dict[str, int] = {
    # modifiers
    "Alt": 0xFFE9,
    "AltGraph": 0xFE03,
    "CapsLock": 0xFFE5,
    "Control": 0xFFE3,
    "Hyper": 0xFFED,
    "Meta": 0xFFEB,
    "NumLock": 0xFF7F,
    "ScrollLock": 0xFF14,
    "Shift": SHIFT,
    "Super": 0xFFEB,
    # whitespace
    "Enter": 0xFF0D,
    "Tab": 0xFF09,
    " ": 0x0020,
    "Space": 0x0020,
    # navigation
    "ArrowDown": 0xFF54,
    "ArrowLeft": 0xFF51,
    "ArrowRight": 0xFF53,
    "ArrowUp": 0xFF52,
    "End": 0xFF57,
    "Home": 0xFF50,
    "PageDown": 0xFF56,
    "PageUp": 0xFF55,
    # editing
    "Backspace": 0xFF08,
    "Clear": 0xFF0B,
    "Copy": 0x1008FF57,
    "Cut": 0x1008FF58,
    "Delete": 0xFFFF,
    "Insert": 0xFF63,
    "Paste": 0x1008FF6D,
    "Redo": 0xFF66,
    "Undo": 0xFF65,
    # user interface
    "Cancel": 0xFF69,
    "ContextMenu": 0xFF67,
    "Escape": 0xFF1B,
    "Execute": 0xFF62,
    "Find": 0xFF68,
    "Help": 0xFF6A,
    "Pause": 0xFF13,
    "PrintScreen": 0xFF61,
    "Select": 0xFF60,
    # right-hand modifiers, by their ``KeyboardEvent.code`` names
    "ShiftLeft": SHIFT,
    "ShiftRight": 0xFFE2,
    "ControlLeft": 0xFFE3,
    "ControlRight": 0xFFE4,
    "AltLeft": 0xFFE9,
    "AltRight": 0xFFEA,
    "MetaLeft": 0xFFEB,
    "MetaRight": 0xFFEC,
}
NAMED.update({f"F{n}": 0xFFBE + n - 1 for n in range(1, 36)})  # F1 0xffbe ... F35 0xffe0

#: Characters typed with Shift on a US keyboard (what QEMU's default keymap expects).
SHIFTED = frozenset('~!@#$%^&*()_+{}|:"<>?ABCDEFGHIJKLMNOPQRSTUVWXYZ')

_CONTROL = {"\n": 0xFF0D, "\r": 0xFF0D, "\t": 0xFF09, "\b": 0xFF08, "\x1b": 0xFF1B}


def char_keysym(char: str) -> int:
    """The keysym of one character: Latin-1 maps to itself, anything else to
    ``0x01000000 | codepoint`` (the X11 Unicode rule)."""
    if char in _CONTROL:
        return _CONTROL[char]
    cp = ord(char)
    if 0x20 <= cp <= 0x7E or 0xA0 <= cp <= 0xFF:
        return cp
    if cp < 0x20 or 0x7F <= cp < 0xA0:
        raise ValueError(f"no key types the control character U+{cp:04X}")
    return 0x01000000 | cp


def key_keysym(key: str) -> int:
    """The keysym for a ``KeyboardEvent.key`` value: a named key, or a single character.
    Raises ``ValueError`` for anything else."""
    named = NAMED.get(key)
    if named is not None:
        return named
    if len(key) == 1:
        return char_keysym(key)
    raise ValueError(f"unknown key name {key!r}")


def text_keys(text: str) -> list[tuple[int, bool]]:
    """The (keysym, down) events that type ``text``: press and release per character, with
    Shift held around the characters a US keyboard shifts."""
    events: list[tuple[int, bool]] = []
    for char in text:
        keysym = char_keysym(char)
        if char in SHIFTED:
            events += [(SHIFT, True), (keysym, True), (keysym, False), (SHIFT, False)]
        else:
            events += [(keysym, True), (keysym, False)]
    return events


__all__ = ["NAMED", "SHIFT", "char_keysym", "key_keysym", "text_keys"]
