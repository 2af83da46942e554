"""For a few test points of a d = 2 Gaussian-latent checkpoint: the true posterior on a grid against q(z|x)."""
import sys, math, torch
from hsvae.cli.checkpoints import find_run_config, load_checkpoint
from hsvae.cli.instantiation import instantiate_model
from hsvae.cli.stages import instantiate_datamodule
from hsvae.evaluation import latent_grid
torch.manual_seed(0)
ck = sys.argv[1]; n = int(sys.argv[2]) if len(sys.argv) > 2 else 30
cfg, _ = find_run_config(ck, None)
model = instantiate_model(cfg); state = load_checkpoint(ck)["state_dict"]; model.load_state_dict(state); net = model.net.eval()
dm = instantiate_datamodule(cfg); dm.prepare_data(); dm.setup("test")
x = next(iter(dm.test_dataloader()))[0][:n]
with torch.no_grad():
    q = net.posterior(x); mu, sd = q.mean, q.stddev
    z, lc = latent_grid(2, False, 0.02, 6.0)
    z = z.float(); prior = net.latent.prior(x)
    logj = torch.cat([net.likelihood.log_prob_table(x.reshape(n, -1), net.decode(c)) + prior.log_prob(c) for c in z.split(8192)], -1)
    logj = logj.double() + lc
    lp = torch.logsumexp(logj, -1)
    post = (logj - lp[:, None]).exp()  # (n, G) posterior mass per cell
    inside = (((z[None] - mu[:, None]) / sd[:, None]).abs() <= 4).all(-1)
    mass_in = (post * inside).sum(-1)
    is500 = net.log_likelihood(x, 500); is5000 = net.log_likelihood(x, 5000)
    elbo_terms = net(x)
for i in range(n):
    print(f"{i:3d} sd=({sd[i,0]:.3f},{sd[i,1]:.3f}) grid={lp[i]:9.3f} is500={is500[i]:9.3f} is5000={is5000[i]:9.3f} "
          f"mass within 4 sd of q: {mass_in[i]:.3f}")
print("mean grid", lp.mean().item(), "is500", is500.mean().item(), "is5000", is5000.mean().item(), "mean mass in", mass_in.mean().item())
