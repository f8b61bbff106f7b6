"""Prompt templates around a task's prompt (``alphallm.prompts``)."""

import pytest

from alphallm import builders
from alphallm import prompts
from alphallm.tasks import get_task


def test_presets_wrap_every_prompt_and_keep_the_task():
  task = get_task("arithmetic")
  wrapped = prompts.wrap_task(task, "llama2_chat")
  p = task.generate(0, 1)[0]
  assert wrapped.prompt(p) == f"[INST] {task.prompt(p)} [/INST]\n"
  assert wrapped.name == task.name and wrapped.equation_steps
  assert wrapped.demonstration(p) == task.demonstration(p)
  assert wrapped.verify(p, task.demonstration(p)) and not wrapped.verify(p, "A: -1")
  assert wrapped.generate(3, 4) == task.generate(3, 4)
  assert wrapped.max_value == task.max_value      # knobs are the task's
  wiz = prompts.wrap_task(task, "wizardmath").prompt(p)
  assert wiz.startswith("Below is an instruction") and task.prompt(p) in wiz
  assert wiz.endswith("Let's think step by step.\n")
  assert prompts.wrap_task(task, "") is task and prompts.wrap_task(task, None) is task


def test_custom_template_with_braces_in_the_text():
  task = get_task("arithmetic")
  p = task.generate(0, 1)[0]
  # Filled by replacement, not str.format: other braces (LaTeX) are kept as they are.
  wrapped = prompts.wrap_task(task, "\\frac{a}{b} <<{prompt}>>")
  assert wrapped.prompt(p) == "\\frac{a}{b} <<" + task.prompt(p) + ">>\n"


@pytest.mark.parametrize("spec", ["no slot", "{prompt}{prompt}", "x" * 5000 + "{prompt}", 3])
def test_bad_templates_are_named(spec):
  with pytest.raises(ValueError, match="prompt_wrapper"):
    prompts.resolve_template(spec)


def test_config_prompt_wrapper_reaches_the_task_and_is_validated():
  import sys, os  # pylint: disable=import-outside-toplevel,multiple-imports
  from alphallm import experiment  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments"))
  try:
    import quickstart  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.pop(0)
  c = quickstart.get_config()
  c.model.prompt_wrapper = "llama2_chat"
  task = builders.build_task(c)
  assert task.prompt(task.generate(0, 1)[0]).startswith("[INST] Q: ")
  experiment.validate_config(c)
  c.model.prompt_wrapper = "oops"
  with pytest.raises(ValueError, match="prompt_wrapper"):
    experiment.validate_config(c)
