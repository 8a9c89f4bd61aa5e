"""The wrapped client: a proxy that passes everything through and hands the recorded methods
(OpenAI's ``chat.completions.create``, ``responses.create``, ``embeddings.create``, Anthropic's
``messages.create`` and ``messages.stream``) to a :class:`~keel.sdk.llm_recorder.Recorder`."""

from __future__ import annotations

import functools
import sys
from typing import Any

from keel.sdk.llm_recorder import Recorder, counters

__all__ = ["Proxy", "is_async_client"]

_INTERCEPT = {
    ("chat", "completions", "create"): "chat.completions",
    ("responses", "create"): "responses",
    ("embeddings", "create"): "embeddings",
    ("messages", "create"): "messages",  # Anthropic
}
#: Client helpers that build a request and send it later (Anthropic's ``messages.stream``).
_HELPERS = {("messages", "stream"): "messages"}
_PREFIXES = {path[:i] for path in (*_INTERCEPT, *_HELPERS) for i in range(1, len(path))}


def _intercept(recorder: Recorder, endpoint: str, method: Any, is_async: bool) -> Any:
    if is_async:

        async def acreate(*args: Any, **kwargs: Any) -> Any:
            if args:  # the openai methods are keyword-only: leave anything else alone
                return await method(*args, **kwargs)
            extra = kwargs.pop("extra_keel", None)
            prompt = kwargs.pop("keel_prompt", None)
            return await recorder.ainvoke(
                endpoint, lambda: method(**kwargs), kwargs, bool(kwargs.get("stream")), extra, prompt
            )

        return functools.wraps(method)(acreate)

    def create(*args: Any, **kwargs: Any) -> Any:
        if args:
            return method(*args, **kwargs)
        extra = kwargs.pop("extra_keel", None)
        prompt = kwargs.pop("keel_prompt", None)
        return recorder.invoke(endpoint, lambda: method(**kwargs), kwargs, bool(kwargs.get("stream")), extra, prompt)

    return functools.wraps(method)(create)


_MANAGER_REQUEST = {False: "_MessageStreamManager__api_request", True: "_AsyncMessageStreamManager__api_request"}


def _intercept_helper(recorder: Recorder, endpoint: str, method: Any, is_async: bool) -> Any:
    """Anthropic's ``messages.stream(...)``: the client builds its stream manager (which sends
    nothing until entered); keel swaps the request it will send for a recorded one, so the
    helper's events, ``text_stream`` and ``get_final_message()`` work on live and replayed
    streams alike."""

    def stream(*args: Any, **kwargs: Any) -> Any:
        if args:
            return method(*args, **kwargs)
        extra = kwargs.pop("extra_keel", None)
        prompt = kwargs.pop("keel_prompt", None)
        manager = method(**kwargs)
        attribute = _MANAGER_REQUEST[is_async]
        api_request = getattr(manager, attribute, None)
        if api_request is None:  # a client whose helper keel does not know: passed through
            counters.failed(f"record {endpoint} stream helper calls of this client version", TypeError(attribute))
            return manager
        request = {**kwargs, "stream": True}
        if is_async:

            async def send() -> Any:
                sent: list[bool] = []

                def call() -> Any:
                    sent.append(True)
                    return api_request

                try:
                    return await recorder.ainvoke(endpoint, call, request, True, extra, prompt)
                finally:
                    if not sent:  # replayed (or refused): the client's request is never awaited
                        api_request.close()

            setattr(manager, attribute, send())
        else:
            setattr(manager, attribute, lambda: recorder.invoke(endpoint, api_request, request, True, extra, prompt))
        return manager

    return functools.wraps(method)(stream)


class Proxy:
    """Passes every attribute through to the wrapped object; intercepts the recorded methods."""

    __slots__ = ("_keel_async", "_keel_children", "_keel_path", "_keel_recorder", "_keel_target")

    def __init__(self, target: Any, recorder: Recorder, path: tuple[str, ...], is_async: bool) -> None:
        object.__setattr__(self, "_keel_target", target)
        object.__setattr__(self, "_keel_recorder", recorder)
        object.__setattr__(self, "_keel_path", path)
        object.__setattr__(self, "_keel_async", is_async)
        object.__setattr__(self, "_keel_children", {})

    def __getattr__(self, name: str) -> Any:
        children = self._keel_children
        found = children.get(name)
        if found is not None:
            return found
        value = getattr(self._keel_target, name)
        path = (*self._keel_path, name)
        endpoint = _INTERCEPT.get(path)
        if endpoint is not None:
            found = _intercept(self._keel_recorder, endpoint, value, self._keel_async)
        elif path in _HELPERS:
            found = _intercept_helper(self._keel_recorder, _HELPERS[path], value, self._keel_async)
        elif path in _PREFIXES:
            found = Proxy(value, self._keel_recorder, path, self._keel_async)
        elif not self._keel_path and name in ("with_options", "copy"):
            found = _client_factory(value, self._keel_recorder, self._keel_async)
        else:
            return value
        children[name] = found
        return found

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._keel_target, name, value)

    def __dir__(self) -> list[str]:
        return dir(self._keel_target)

    def __repr__(self) -> str:
        return f"<keel.llm {self._keel_recorder.mode} {self._keel_target!r}>"

    def __enter__(self) -> Any:
        self._keel_target.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._keel_target.__exit__(*exc)

    async def __aenter__(self) -> Any:
        await self._keel_target.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._keel_target.__aexit__(*exc)


def _client_factory(factory: Any, recorder: Recorder, is_async: bool) -> Any:
    @functools.wraps(factory)
    def make(*args: Any, **kwargs: Any) -> Any:
        return Proxy(factory(*args, **kwargs), recorder, (), is_async)

    return make


def is_async_client(client: Any) -> bool:
    try:
        import openai

        if isinstance(client, openai.AsyncOpenAI):
            return True
        if isinstance(client, openai.OpenAI):
            return False
    except ImportError:  # pragma: no cover
        pass
    anthropic = sys.modules.get("anthropic")  # an anthropic client means it is imported
    if anthropic is not None:
        if isinstance(client, anthropic.AsyncAnthropic):
            return True
        if isinstance(client, anthropic.Anthropic):
            return False
    return type(client).__name__.startswith("Async")
