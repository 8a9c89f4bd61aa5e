"""The streams a wrapped client returns: live ones that remember their chunks (recorded and
their span ended once read to the end) and replayed ones (see :mod:`keel.sdk.llm`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from keel.sdk import llm_spans as spans

__all__ = ["AsyncRecordingStream", "AsyncReplayStream", "RecordingStream", "ReplayStream", "StreamRecord"]


class StreamRecord:
    """What a recording stream remembers: its chunks and when they came; recorded (when
    ``prep`` is given) and its span ended once read to the end."""

    def __init__(
        self,
        stream: Any,
        recorder: Any,
        prep: Any,
        started: float,
        span: Any = None,
        endpoint: str = "",
        model: Any = None,
    ) -> None:
        self._stream = stream
        self._recorder = recorder
        self._prep = prep
        self._started = started
        self._span = span
        self._endpoint = prep.endpoint if prep is not None else endpoint
        self._model = model
        self._first: float | None = None
        self._chunks: list[Any] = []
        self._done = False

    def _keep(self, chunk: Any) -> None:
        if self._first is None:
            self._first = time.perf_counter()
        self._chunks.append(chunk)

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        now = time.perf_counter()
        first = (self._first - self._started) * 1000 if self._first is not None else None
        endpoint = self._endpoint
        if self._prep is not None:
            self._recorder.queue_stream(self._prep, self._chunks, (now - self._started) * 1000, first)
        spans.finish_stream(self._span, endpoint, self._chunks, self._model, self._recorder._prices(), True)

    def _failed(self, error: BaseException) -> None:
        if not self._done:
            self._done = True
            spans.fail(self._span, error)

    def _closed(self) -> None:
        """Closed before the end: not recorded; the span ends with what was read."""
        if not self._done:
            self._done = True
            prices = self._recorder._prices()
            spans.finish_stream(self._span, self._endpoint, self._chunks, self._model, prices, False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class RecordingStream(StreamRecord):
    """The caller's stream, unchanged, remembering its chunks; recorded once read to the end."""

    def __init__(self, stream: Any, recorder: Any, prep: Any, started: float,
                 span: Any = None, endpoint: str = "", model: Any = None) -> None:  # fmt: skip
        super().__init__(stream, recorder, prep, started, span, endpoint, model)
        self._iterator = iter(stream)

    def __iter__(self) -> RecordingStream:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._iterator)
        except StopIteration:
            self._finish()
            raise
        except BaseException as exc:
            self._failed(exc)
            raise
        self._keep(chunk)
        return chunk

    def close(self) -> None:
        """Close the underlying stream (an unfinished stream is not recorded)."""
        self._closed()
        self._stream.close()

    def __enter__(self) -> RecordingStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncRecordingStream(StreamRecord):
    """The async flavour of :class:`RecordingStream`."""

    def __init__(self, stream: Any, recorder: Any, prep: Any, started: float,
                 span: Any = None, endpoint: str = "", model: Any = None) -> None:  # fmt: skip
        super().__init__(stream, recorder, prep, started, span, endpoint, model)
        self._iterator = stream.__aiter__()

    def __aiter__(self) -> AsyncRecordingStream:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._iterator.__anext__()
        except StopAsyncIteration:
            self._finish()
            raise
        except BaseException as exc:
            self._failed(exc)
            raise
        self._keep(chunk)
        return chunk

    async def close(self) -> None:
        """Close the underlying stream (an unfinished stream is not recorded)."""
        self._closed()
        await self._stream.close()

    async def __aenter__(self) -> AsyncRecordingStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class ReplaySpan:
    """Ends a replayed stream's span (already described) once the stream is read or closed."""

    def __init__(self, span: Any) -> None:
        self._span = span

    def _end(self, complete: bool) -> None:
        span, self._span = self._span, None
        spans.end(span, complete)


class ReplayStream(ReplaySpan):
    """A replayed stream: the recorded chunks, as the types the live stream yields."""

    response = None

    def __init__(self, chunks: Iterator[Any], span: Any = None) -> None:
        super().__init__(span)
        self._chunks = chunks

    def __iter__(self) -> ReplayStream:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._chunks)
        except StopIteration:
            self._end(True)
            raise

    def close(self) -> None:
        """Nothing to release; the span ends."""
        self._end(False)

    def __enter__(self) -> ReplayStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncReplayStream(ReplaySpan):
    """A replayed stream for async clients."""

    response = None

    def __init__(self, chunks: Iterator[Any], span: Any = None) -> None:
        super().__init__(span)
        self._chunks = chunks

    def __aiter__(self) -> AsyncReplayStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._chunks)
        except StopIteration:
            self._end(True)
            raise StopAsyncIteration from None

    async def close(self) -> None:
        """Nothing to release; the span ends."""
        self._end(False)

    async def __aenter__(self) -> AsyncReplayStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
