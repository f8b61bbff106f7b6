"""Prompt templates: a model's instruction format around a task's prompt.

A pretrained chat or instruction model answers best in the format it was
tuned on. ``config.model.prompt_wrapper`` names a preset or gives a template
with one ``{prompt}`` slot; ``wrap_task`` returns the task with every prompt
(demonstrations, critic data, search, evaluation, imagination) so wrapped.
The slot is filled by plain string replacement, never ``str.format``, so
braces in the task's text (LaTeX in MATH) are safe.

Presets:

* ``llama2_chat``: Llama-2-chat's ``[INST] ... [/INST]`` turn (no system
  prompt; the tokenizer adds BOS), the paper's chat format;
* ``wizardmath``: WizardMath-V1.0's Alpaca-style instruction with
  "Let's think step by step.", the paper's MATH policy.

A wrapped prompt always ends with the task's step delimiter, so the first
option of the search is the first reasoning step.
"""

from __future__ import annotations

from typing import Any

from alphallm.tasks.base import Problem, Task

SLOT = "{prompt}"
PRESETS = {
    "llama2_chat": "[INST] {prompt} [/INST]",
    "wizardmath": (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n{prompt}\n\n### Response: Let's think step "
        "by step."),
}
MAX_TEMPLATE_CHARS = 4096


def resolve_template(spec: str) -> str:
  """The template named by ``spec`` (a preset name, or a template with one ``{prompt}``)."""
  if not isinstance(spec, str) or not spec:
    raise ValueError(f"config.model.prompt_wrapper must be a preset name {sorted(PRESETS)} or "
                     f"a template containing {SLOT!r} once, got {spec!r}")
  template = PRESETS.get(spec, spec)
  if template.count(SLOT) != 1 or len(template) > MAX_TEMPLATE_CHARS:
    raise ValueError(f"config.model.prompt_wrapper={spec[:80]!r} is neither a preset "
                     f"{sorted(PRESETS)} nor a template (at most {MAX_TEMPLATE_CHARS} "
                     f"characters) containing {SLOT!r} exactly once")
  return template


class WrappedTask(Task):
  """``task`` with its prompts wrapped in ``template``; everything else is ``task``'s."""

  def __init__(self, task: Task, template: str):
    self.inner = task
    self.template = resolve_template(template)
    self.name = task.name
    self.step_delimiter = task.step_delimiter
    self.answer_prefix = task.answer_prefix
    self.equation_steps = task.equation_steps

  def __getattr__(self, attr: str) -> Any:  # the task's knobs (split, data, ...)
    if attr == "inner":
      raise AttributeError(attr)
    return getattr(self.inner, attr)

  def prompt(self, problem: Problem) -> str:
    text = self.template.replace(SLOT, self.inner.prompt(problem))
    return text if text.endswith(self.step_delimiter) else text + self.step_delimiter

  def generate(self, seed: int, num: int) -> list[Problem]:
    return self.inner.generate(seed, num)

  def demonstration(self, problem: Problem) -> str:
    return self.inner.demonstration(problem)

  def verify(self, problem: Problem, completion: str) -> bool:
    return self.inner.verify(problem, completion)

  def extract_answer(self, completion: str) -> str | None:
    return self.inner.extract_answer(completion)

  def split_steps(self, completion: str) -> list[str]:
    return self.inner.split_steps(completion)


def wrap_task(task: Task, spec: str | None) -> Task:
  """``task`` wrapped by the template ``spec`` names; ``task`` itself when ``spec`` is empty."""
  return WrappedTask(task, spec) if spec else task
