"""Every error Parallax raises, in one tree.

```
ParallaxError
├── UserError                 misuse: bad input, bad configuration; exit code 2 in the CLI
│   ├── InvalidAppend         empty batch, too many records, too large, bad header, bad command
│   ├── InvalidStreamName     empty, too long, or not UTF-8
│   ├── InvalidRead           a read start or limit that makes no sense
│   └── StoreURLError         a store URL with an unknown scheme or a bad shape
│   ├── PlanError             a plan or target that cannot be compiled or loaded
│   └── TemplateError         a prompt template refers to something that does not exist
├── StreamError               the stream said no; exit code 1 in the CLI
│   ├── StreamNotFound        no stream by that name
│   ├── StreamExists          create() of a name that is taken
│   ├── SeqNumMismatch        match_seq_num lost a race; carries the tail it should have been
│   ├── FencingTokenMismatch  the fencing token did not match; carries the current token
│   └── ReadUnwritten         a read starting past the tail; carries the tail
└── RunError                  a run could not go on as planned; exit code 1 in the CLI
    ├── RunNotFound           no run by that id
    ├── Fenced                another coordinator took the run over; this one must stop
    ├── GrantDenied           an agent used a stream it holds no grant for
    └── AgentFailed           one attempt of an agent failed; `retryable` says if another may help
        ├── AgentTimeout      the attempt ran past its timeout (its process group was killed)
        ├── InvalidOutput     the output did not validate against the step's model
        │   └── LowConfidence the output came back below the step's confidence threshold
        └── ProviderError     the model provider refused or broke (HTTP status, Retry-After)
```

A lost race always shows up as exactly one of `SeqNumMismatch` or `FencingTokenMismatch`,
so a caller that does read-decide-append can catch it, re-read and decide again.
Backends convert their vendor errors into these at their edge (`raise ... from e`).
"""

from __future__ import annotations


class ParallaxError(Exception):
    """Base of every error Parallax raises on purpose."""


class UserError(ParallaxError):
    """The caller asked for something that cannot be done as asked; nothing was changed."""


class InvalidAppend(UserError):
    """An append batch broke a rule (see `parallax.streams.base.AppendInput`); nothing was written."""


class InvalidStreamName(UserError):
    """A stream name must be 1..512 bytes of UTF-8."""


class InvalidRead(UserError):
    """A read start or limit outside what the store accepts."""


class StoreURLError(UserError):
    """A store URL that no backend understands."""


class PlanError(UserError):
    """A plan, pattern or target that cannot be loaded or compiled; says where and why."""


class TemplateError(UserError):
    """A prompt template names a value that does not exist."""


class StreamError(ParallaxError):
    """A stream operation that was well formed but refused by the stream's current state."""


class StreamNotFound(StreamError):
    def __init__(self, stream: str) -> None:
        super().__init__(f"stream not found: {stream!r}")
        self.stream = stream


class StreamExists(StreamError):
    def __init__(self, stream: str) -> None:
        super().__init__(f"stream already exists: {stream!r}")
        self.stream = stream


class BlobNotFound(StreamError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no complete blob {ref}")
        self.ref = ref


class SeqNumMismatch(StreamError):
    """`match_seq_num` did not equal the stream's tail; `expected` is the tail at that moment."""

    def __init__(self, expected: int, *, stream: str = "", given: int | None = None) -> None:
        where = f" on {stream!r}" if stream else ""
        got = f" (match_seq_num was {given})" if given is not None else ""
        super().__init__(f"sequence number mismatch{where}: the tail is {expected}{got}")
        self.expected = expected
        self.stream = stream
        self.given = given


class FencingTokenMismatch(StreamError):
    """The append's fencing token is not the stream's; `expected` is the current token."""

    def __init__(self, expected: str, *, stream: str = "", given: str | None = None) -> None:
        where = f" on {stream!r}" if stream else ""
        got = f" (append carried {given!r})" if given is not None else ""
        super().__init__(f"fencing token mismatch{where}: the stream is fenced with {expected!r}{got}")
        self.expected = expected
        self.stream = stream
        self.given = given


class ReadUnwritten(StreamError):
    """A read started past the tail (and did not ask to clamp); `tail` is the current tail."""

    def __init__(self, tail: int, *, stream: str = "", start: int | None = None) -> None:
        where = f" of {stream!r}" if stream else ""
        at = f" at {start}" if start is not None else ""
        super().__init__(f"read{at} starts past the tail{where}, which is {tail}")
        self.tail = tail
        self.stream = stream
        self.start = start


class StoreUnavailable(StreamError):
    """The store did not answer in time, or could not be reached: nothing is known to have
    happened, and trying again later may succeed. Not a failure of whatever was using it."""


class RunError(ParallaxError):
    """A run could not go on as planned."""


class RunNotFound(RunError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"run not found: {run_id!r}")
        self.run_id = run_id


class Fenced(RunError):
    """Another coordinator fenced the run's control stream; this one must stop writing."""


class GrantDenied(RunError):
    """An agent tried to use a stream it holds no grant for."""

    def __init__(self, agent: str, stream: str, action: str) -> None:
        super().__init__(f"agent {agent!r} has no grant to {action} {stream!r}")
        self.agent = agent
        self.stream = stream
        self.action = action


class AgentFailed(RunError):
    """One attempt of an agent failed. `retryable` says whether another attempt may succeed;
    `retry_after` (seconds) is the provider's own hint, when it gave one."""

    retryable: bool = True
    usage: dict[str, object] | None = None  # what the failed attempt consumed, when known

    def __init__(self, message: str, *, retryable: bool | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = retry_after


class AgentTimeout(AgentFailed):
    retryable = True


class InvalidOutput(AgentFailed):
    retryable = False


class LowConfidence(InvalidOutput):
    """A result came back below the step's confidence threshold."""

    def __init__(
        self, message: str, *, retryable: bool, escalate: bool, usage: dict[str, object] | None = None
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.escalate = escalate
        self.usage = usage


class ProviderError(AgentFailed):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        if retryable is None:
            retryable = status is None or status == 429 or status >= 500
        super().__init__(message, retryable=retryable, retry_after=retry_after)
        self.status = status
