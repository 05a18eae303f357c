import asyncio

from bentoml._internal.server.http.traffic import TimeoutMiddleware

from services import bentoml_fixes


async def ok_app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def run_request(middleware) -> tuple[list, list]:
    async def main():
        sent = []

        async def send(message) -> None:
            sent.append(message)

        await middleware({"type": "http"}, None, send)
        loop = asyncio.get_running_loop()
        return sent, [h for h in loop._scheduled if not h.cancelled()]

    return asyncio.run(main())


def test_the_request_timer_is_cancelled_when_the_request_ends() -> None:
    assert bentoml_fixes.apply()
    sent, live_timers = run_request(TimeoutMiddleware(ok_app, timeout=60))
    assert sent[0]["status"] == 200
    assert live_timers == []  # BentoML's own version leaves a 60 s timer holding the request


def test_a_slow_request_still_times_out() -> None:
    bentoml_fixes.apply()

    async def slow_app(scope, receive, send) -> None:
        await asyncio.sleep(5)

    sent, _ = run_request(TimeoutMiddleware(slow_app, timeout=0.05))
    assert sent[0]["status"] == 504
