"""Placeholder (replaced by the banner module)."""


def start_banner(cfg, ckpt_path=None) -> str:
    return f"hsvae: {cfg.task_name} -> {cfg.paths.output_dir}"
