"""gRPC requests as the serve tests send them: a greedy chat with lookahead options."""
from __future__ import annotations

from protos.lookahead.v1 import lookahead_pb2 as pb


def chat_request(messages: list[dict], max_tokens: int, **lookahead) -> pb.GenerateRequest:
    """A greedy GenerateRequest for `messages` (OpenAI-style dicts); `lookahead` the LookaheadOptions."""
    return pb.GenerateRequest(model="lookahead", max_tokens=max_tokens, temperature=0.0,
                              messages=[pb.ChatMessage(role=m["role"], content=m["content"]) for m in messages],
                              lookahead=pb.LookaheadOptions(**lookahead))
