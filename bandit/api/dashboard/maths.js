// Posterior densities for the plots, derived from what /stats reports.
//
// The service's posteriors (bandit/policy.py, untempered, as /stats summarises them):
//   bernoulli: Beta(prior.alpha + successes, prior.beta + failures)
//   gaussian:  the mean is Student-t with 2*alpha_n degrees of freedom (Normal-Gamma)
// /stats gives the posterior mean, the central 95% interval and n, not the parameters. Without
// forgetting, successes + failures = n, so a Beta is exact: alpha + beta = prior sum + n and
// alpha = mean * (alpha + beta); we check that it reproduces the reported interval. With
// forgetting the evidence is decayed below n, so the Beta's size is fitted to the interval
// instead (a Beta is fixed by its mean and one quantile, so this is still the posterior). For a
// gaussian experiment with forgetting the degrees of freedom cannot be recovered: a normal
// approximation from the mean and interval is drawn, and labelled as such.

const Z975 = 1.959963984540054;

// Lanczos approximation (g = 7, n = 9): about 15 significant digits for x > 0.
const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
  -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6,
  1.5056327351493116e-7,
];

export function logGamma(x) {
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  x -= 1;
  let sum = LANCZOS[0];
  for (let i = 1; i < 9; i++) sum += LANCZOS[i] / (x + i);
  const t = x + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(sum);
}

function logBeta(a, b) {
  return logGamma(a) + logGamma(b) - logGamma(a + b);
}

export function betaPdf(x, a, b) {
  if (x <= 0 || x >= 1) return 0;
  return Math.exp((a - 1) * Math.log(x) + (b - 1) * Math.log1p(-x) - logBeta(a, b));
}

// Continued fraction of the incomplete beta function (modified Lentz, as in Numerical Recipes).
function betaContinuedFraction(x, a, b) {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 100000; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-14) break;
  }
  return h;
}

/** The regularized incomplete beta function I_x(a, b): the Beta(a, b) CDF at x. */
export function betaCdf(x, a, b) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(a * Math.log(x) + b * Math.log1p(-x) - logBeta(a, b));
  if (x < (a + 1) / (a + b + 2)) return (front * betaContinuedFraction(x, a, b)) / a;
  return 1 - (front * betaContinuedFraction(1 - x, b, a)) / b;
}

export function studentTPdf(x, dof, loc, scale) {
  const z = (x - loc) / scale;
  const logDensity = logGamma((dof + 1) / 2) - logGamma(dof / 2)
    - 0.5 * Math.log(dof * Math.PI) - ((dof + 1) / 2) * Math.log1p((z * z) / dof);
  return Math.exp(logDensity) / scale;
}

function studentTCdf(t, dof) {
  const tail = 0.5 * betaCdf(dof / (dof + t * t), dof / 2, 0.5);
  return t >= 0 ? 1 - tail : tail;
}

/** The p-quantile of the standard Student-t with ``dof`` degrees of freedom (bisection). */
export function studentTQuantile(p, dof) {
  let low = -1e6;
  let high = 1e6;
  for (let i = 0; i < 200 && high - low > 1e-12 * Math.max(1, Math.abs(high)); i++) {
    const middle = (low + high) / 2;
    if (studentTCdf(middle, dof) < p) low = middle;
    else high = middle;
  }
  return (low + high) / 2;
}

export function normalPdf(x, mean, sd) {
  const z = (x - mean) / sd;
  return Math.exp(-0.5 * z * z) / (sd * Math.sqrt(2 * Math.PI));
}

const CI_TOLERANCE = 2e-3; // how closely a candidate Beta must reproduce the reported interval

function reproducesInterval(alpha, beta, low, high) {
  return Math.abs(betaCdf(low, alpha, beta) - 0.025) < CI_TOLERANCE
    && Math.abs(betaCdf(high, alpha, beta) - 0.975) < CI_TOLERANCE;
}

/** The size alpha + beta of the Beta with this mean whose 2.5% quantile is ``low``. */
function fitBetaSize(mean, low) {
  // A bigger size concentrates the Beta around its mean, so the CDF at low (< mean) falls.
  let small = Math.log(1e-3);
  let big = Math.log(1e12);
  for (let i = 0; i < 200; i++) {
    const middle = (small + big) / 2;
    const size = Math.exp(middle);
    if (betaCdf(low, mean * size, (1 - mean) * size) > 0.025) small = middle;
    else big = middle;
  }
  return Math.exp((small + big) / 2);
}

/**
 * The posterior density of one arm's mean: {kind, label, pdf, support: [lo, hi]} or null.
 * ``kind``: "beta" (exact), "beta-fitted" (exact law, size fitted to the interval),
 * "student-t" (exact), "normal-approx" (approximation).
 */
export function posteriorDensity(reward, prior, forgetting, arm) {
  const mean = arm.mean;
  const [low, high] = arm.ci95 || [null, null];
  if (![mean, low, high].every(Number.isFinite) || !(high > low)) return null;
  if (reward === "bernoulli") {
    let size = prior.alpha + prior.beta + arm.n;
    let kind = "beta";
    if (forgetting || !reproducesInterval(mean * size, (1 - mean) * size, low, high)) {
      size = fitBetaSize(mean, low);
      kind = "beta-fitted";
      if (!reproducesInterval(mean * size, (1 - mean) * size, low, high)) {
        return normalApproximation(mean, low, high);
      }
    }
    const alpha = mean * size;
    const beta = (1 - mean) * size;
    const spread = Math.max(high - mean, mean - low);
    return {
      kind, alpha, beta,
      label: `Beta(${formatParameter(alpha)}, ${formatParameter(beta)})`,
      pdf: (x) => betaPdf(x, alpha, beta),
      support: [Math.max(0, low - 1.5 * spread), Math.min(1, high + 1.5 * spread)],
    };
  }
  if (!forgetting) {
    const dof = 2 * prior.alpha + arm.n;
    const scale = (high - low) / 2 / studentTQuantile(0.975, dof);
    const spread = (high - low) / 2;
    return {
      kind: "student-t", dof, loc: mean, scale,
      label: `Student-t(ν=${formatParameter(dof)}, ${formatParameter(mean)}, ` +
        `${formatParameter(scale)})`,
      pdf: (x) => studentTPdf(x, dof, mean, scale),
      support: [low - 2.5 * spread, high + 2.5 * spread],
    };
  }
  return normalApproximation(mean, low, high);
}

function normalApproximation(mean, low, high) {
  const sd = (high - low) / (2 * Z975);
  return {
    kind: "normal-approx", sd,
    label: `≈ Normal(${formatParameter(mean)}, sd ${formatParameter(sd)})`,
    pdf: (x) => normalPdf(x, mean, sd),
    support: [mean - 4 * sd, mean + 4 * sd],
  };
}

function formatParameter(value) {
  return Math.abs(value) >= 1000 ? Math.round(value).toLocaleString("en-US")
    : Number(value.toPrecision(4)).toString();
}
