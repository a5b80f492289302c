"""UTF-8 bytes as tokens, for random-weight LLMs (tests, shape benchmarks).

Random models have no tokenizer of their own; bytes give real, reversible
token ids without any download. Ids 0, 1, 2 are pad, bos and eos; byte b is
id b + 3.
"""

from typing import List, Sequence


class ByteTokenizer:
  bos_token_id, eos_token_id, pad_token_id = 1, 2, 0
  vocab_size = 259
  chat_template = None
  name = "bytes"

  def encode(self, text: str, add_special_tokens: bool = False) -> List[int]:
    ids = [b + 3 for b in text.encode("utf-8")]
    return [self.bos_token_id] + ids if add_special_tokens else ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    del skip_special_tokens
    return bytes(i - 3 for i in ids if i >= 3).decode("utf-8", "replace")
