"""How well the demo answers everyday prompts: every active demo model, both OpenAI routes, the
sampling settings a user gets by sending none (temperature 1, the model's top_p, each route's default length)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import openai
from everyday_prompts import EVERYDAY_PROMPTS

MIN_WORDS = 5


@dataclass
class AnswerReport:
    total: int = 0
    answered: int = 0  # with at least MIN_WORDS words
    short: list[tuple[str, str, str, str]] = field(default_factory=list)  # (model, route, prompt, answer)

    @property
    def share(self) -> float:
        return self.answered / self.total if self.total else 0.0


def check_answers(url: str, models: list[str], prompts: tuple[str, ...] = EVERYDAY_PROMPTS) -> AnswerReport:
    return asyncio.run(_check(url, models, prompts))


async def _check(url: str, models: list[str], prompts: tuple[str, ...]) -> AnswerReport:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
    report = AnswerReport()
    limit = asyncio.Semaphore(32)

    async def one(model: str, route: str, prompt: str, seed: int) -> None:
        async with limit:
            if route == "completions":
                out = await client.completions.create(model=model, prompt=prompt, seed=seed)
                text = out.choices[0].text
            else:
                chat = await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": prompt}], seed=seed
                )
                text = chat.choices[0].message.content or ""
        report.total += 1
        if len(text.split()) >= MIN_WORDS:
            report.answered += 1
        else:
            report.short.append((model, route, prompt, text))

    jobs = [
        one(model, route, prompt, seed)
        for model in models
        for route in ("completions", "chat")
        for seed, prompt in enumerate(prompts)
    ]
    await asyncio.gather(*jobs)
    await client.close()
    return report
