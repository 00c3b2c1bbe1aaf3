"""The hex forms of JSON-RPC fields, as compiled patterns: one definition for the copy path's readers.

Used by the RPC client's damage checks (backfill/chain/answer_check.py) and the hand-written decoder
(backfill/decode/decoder.py). The audit's reference decoder (backfill/decode/reference.py) keeps its own on
purpose: it shares no decoding code with the copy path.
"""

from __future__ import annotations

import re

HEX = re.compile(r"0x[0-9a-fA-F]*\Z")  # any number of hex digits, "0x" alone included
DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*\Z")  # whole bytes
QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}\Z")  # a number: at least one digit, at most 256 bits
WORD = re.compile(r"0x[0-9a-fA-F]{64}\Z")  # 32 bytes: a hash, a topic, a uint256 data word
ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}\Z")  # 20 bytes
ADDRESS_TOPIC = re.compile(r"0x0{24}[0-9a-fA-F]{40}\Z")  # an indexed address: 12 zero bytes, then 20
