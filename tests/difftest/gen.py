#!/usr/bin/env python3
"""gen.py -- random well-typed CDL models for differential testing (issue 11, item 9).

    python3 tests/difftest/gen.py SEED [--features a,b] [-o FILE]

Seed N always gives the same program (random.Random(N); no other source of randomness).
The program is a random DAG of the built-ins with valid shapes: several inputs (reals,
labels, ids), layers with automatic and shared names, explicit params, broadcasting
arithmetic, shape ops, reductions, random tensors, blocks (tuples, defaults, shared
instances, nested calls), loops (forward and reversed, shifted indices, several
carries, collections, layers and blocks in the body), extra entry points, outputs and
a loss made of several terms.  The first line is a comment the harness reads:

    # difftest seed=N classes=K

classes: every i32 input holds values in [0, K) (labels and ids); every class count
and vocabulary in the program is at least K.

Value ranges are tracked with interval arithmetic (inputs within [-1, 1]: the harness
feeds U[-1, 1), the trainer's gradcheck U[0, 1)), so exp never overflows, log and sqrt
see only values >= 0.05, divisors stay away from zero, bce sees probabilities in
[0.01, 0.99]: a generated program computes finite losses and gradients.

Features (--features or DIFFTEST_FEATURES, comma-separated; "-name" turns one off)
switch constructs that were broken on main while others fixed them.  On by default
(fixed): broadcast_b, b_frac, collect_out.  Off: bmul_io (refused by cdlc since a087c44).
    bmul_io        batch multiples f32[B * 2, ...] on inputs and outputs
    broadcast_b    broadcast_to(s, [B, ...])
    b_frac         non-integer arithmetic with B (0.5 * B, B / 2) in shapes
    collect_out    a loop collection used only by `output`
"""
import math
import os
import random
import sys

FEATURES = ("bmul_io", "broadcast_b", "b_frac", "collect_out")
DEFAULT_FEATURES = ("broadcast_b", "b_frac", "collect_out")   # fixed on main: on unless "-name"
BIG = 1e4          # no value may exceed this bound (then the op is not chosen)
SQUASH = 8.0       # values beyond this get squashed before range-sensitive ops


def sig(x):
    return 1 / (1 + math.exp(-max(-50.0, min(50.0, x))))


def softplus(x):
    return x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))


def num(v):
    """A real literal CDL accepts (a digit before the point, no bare '.')."""
    s = "%.4g" % v
    if "e" not in s and "." not in s:
        s += ".0"
    return s


class T:
    """A tensor value: expression text, shape (dim 0 is the compiled batch times bk
    when batched), dtype, value bounds [lo, hi]."""

    def __init__(self, ex, shape, batched=False, dt="f32", lo=-1.0, hi=1.0, bk=1):
        self.ex, self.shape, self.batched, self.dt = ex, tuple(shape), batched, dt
        self.lo, self.hi, self.bk = float(lo), float(hi), bk
        self.uses = 0
        self.collection = False      # a loop result: carry or collection (see collect_out)
        # const: the value does not depend on the data (params, fills and what follows
        # from them), so it may sit exactly on a kink (relu(0), a tie of maximum) while a
        # parameter moves it: central differences then see half of each side, and
        # gradcheck fails without a bug.  Kinked ops are not applied to such values.
        self.const = False
        self.bn = False              # a batch norm's result (its sum over the batch is constant)

    @property
    def rank(self):
        return len(self.shape)

    @property
    def mag(self):
        return max(abs(self.lo), abs(self.hi))

    def like(self, ex, shape=None, lo=None, hi=None, batched=None, bk=None):
        t = T(ex, self.shape if shape is None else shape, self.batched if batched is None else batched,
              self.dt, self.lo if lo is None else lo, self.hi if hi is None else hi,
              self.bk if bk is None else bk)
        t.const = self.const
        return t


def cst(t):
    """t, marked data-independent (see T.const)."""
    t.const = True
    return t


class Scope:
    """Where statements go: the model body, a block body, a loop body or an entry."""

    def __init__(self, kind, bname, parent=None, indent="    "):
        self.kind, self.bname, self.parent, self.indent = kind, bname, parent, indent
        self.vals, self.lines = [], []
        self.loop = None             # (var, start, count, reversed) in a loop body
        self.in_loop = kind == "loop" or (parent is not None and parent.in_loop)
        self.block = None            # the Block being defined (block bodies)
        self.layers = {} if kind in ("model", "block", "entry") else parent.layers
        self.entry = None            # entry name (explicit layer names there)
        self.params = [] if parent is None or kind in ("block", "entry") else parent.params

    def emit(self, line):
        self.lines.append(self.indent + line)

    def pool(self, dt="f32"):
        return [v for v in self.vals if v.dt == dt]


class Block:
    def __init__(self, name, sig, has_loop):
        self.name, self.sig, self.has_loop = name, sig, has_loop
        self.text = ""
        self.ret = []                # result T templates (ex unused)
        self.consts = []             # (name, value, has default)
        self.calls = 0
        self.first_call = None       # (arg texts) of the first call in the model body
        self.bounds = []             # (lo, hi) per tensor argument: the body was made for these
        self.consts_in = []          # per tensor argument: made for a const value (see T.const)

    def fits(self, i, v):
        """Value v may be tensor argument i (its range within the one the body assumed)."""
        lo, hi = self.bounds[i]
        return v.lo >= lo and v.hi <= hi and (not v.const or self.consts_in[i])


class Gen:
    def __init__(self, seed, features=()):
        self.r = random.Random(seed)
        self.seed = seed
        self.features = set(DEFAULT_FEATURES)
        for f in features:
            if f.startswith("-"):
                self.features.discard(f[1:])
            else:
                self.features.add(f)
        self.n = 0
        self.blocks = []
        self.block_stack = []
        self.classes = self.r.randint(2, 5)
        self.B = self.r.choice([1, 2, 3, 4, 4, 5, 6, 8])
        self.T = self.r.randint(1, 4)
        self.lines_pre = []          # model-level params, before everything
        self.nparam = 0
        self.layer_n = 0
        self.depth = 0
        self.nblock = 0
        self.gradcheck = True        # false: gradcheck cannot apply (stop_gradient)

    # ------------------------------------------------------------------ helpers
    def fresh(self, p="v"):
        self.n += 1
        return "%s%d" % (p, self.n)

    def chance(self, p):
        return self.r.random() < p

    def type_str(self, t):
        """The type the generator believes t has (a comment on each statement)."""
        d = [str(x) for x in t.shape]
        if t.batched:
            d[0] = "B" if t.bk == 1 else "B*%d" % t.bk
        return "%s[%s]" % (t.dt, ", ".join(d))

    def dims(self, sc, t):
        """The shape of t as CDL text (the batch dim by name)."""
        d = [str(x) for x in t.shape]
        if t.batched:
            d[0] = sc.bname if t.bk == 1 else "%s * %d" % (sc.bname, t.bk)
        return "[" + ", ".join(d) + "]"

    def pick(self, sc, pred=lambda v: True, dt="f32"):
        c = [v for v in sc.pool(dt) if pred(v)]
        if not c:
            return None
        # prefer values not used yet (every input reaches something), then recent ones
        unused = [v for v in c if v.uses == 0]
        if unused and self.chance(0.5):
            return self.r.choice(unused)
        if self.chance(0.5):
            return c[-1 - min(len(c) - 1, int(self.r.expovariate(0.7)))]
        return self.r.choice(c)

    def assign(self, sc, ex, t, name=None):
        name = name or self.fresh()
        sc.emit("%s = %s  # %s" % (name, ex, self.type_str(t)))
        v = t.like(name)
        v.collection = t.collection
        sc.vals.append(v)
        return v

    def use(self, *ts):
        for t in ts:
            if t is not None:
                t.uses += 1

    def explicit_param(self, sc, shape, kind=None, dim_texts=None):
        """A `param` statement in the scope (model or block level); its T."""
        name = self.fresh("p")
        kind = kind or self.r.choice(["xavier", "normal", "uniform", "const", "ones", "zeros", "he", "default", "none"])
        fi = shape[0] if len(shape) else 1
        fo = shape[1] if len(shape) > 1 else fi
        if len(shape) >= 3:
            rf = 1
            for d in shape[2:]:
                rf *= d
            fi, fo = shape[1] * rf, shape[0] * rf
        if kind == "xavier":
            b = math.sqrt(6 / (fi + fo))
            init = self.r.choice(["xavier_uniform()", "glorot_uniform()"])
        elif kind == "normal":
            s = self.r.choice([0.1, 0.5, 1.0])
            b, init = 6 * s, "normal(0, %s)" % num(s)
        elif kind == "uniform":
            b, init = 0.5, "uniform(-0.5, 0.5)"
        elif kind == "const":
            c = self.r.choice([0.25, -0.5, 1.5])
            b, init = abs(c), self.r.choice(["constant(%s)" % num(c), num(c)])
        elif kind == "ones":
            b, init = 1.0, "ones()"
        elif kind == "zeros":
            b, init = 0.0, "zeros()"
        elif kind == "he":
            b, init = math.sqrt(6 / fi) * 1.0, "he_uniform()"
        elif kind == "default":
            b, init = 1 / math.sqrt(fi), "default()"
        else:
            b = 1 / math.sqrt(max(1, fi)) if len(shape) <= 1 else math.sqrt(6 / (fi + fo))
            b = 0.0 if len(shape) <= 1 else b
            init = None
        dims = "[" + ", ".join(dim_texts or [str(d) for d in shape]) + "]"
        sc.emit("param %s: f32%s%s" % (name, dims, " = " + init if init else ""))
        # the harness's sgd steps move parameters a little: a margin on the bound
        t = cst(T(name, shape, False, "f32", -b - 0.05, b + 0.05))
        if sc.kind == "model":
            sc.params.append(t)
        return t

    # ------------------------------------------------------------------ bounds
    @staticmethod
    def iv_mul(a, b):
        c = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]
        return min(c), max(c)

    def ok(self, lo, hi):
        return math.isfinite(lo) and math.isfinite(hi) and max(abs(lo), abs(hi)) <= BIG

    # ------------------------------------------------------------------ shapes
    def bcast(self, a, b):
        """numpy broadcasting of two T shapes; None when not compatible or ambiguous
        with the batch (a batched dim 0 meets only a missing dim or 1)."""
        ra, rb = a.rank, b.rank
        r = max(ra, rb)
        if (a.batched and ra != r) or (b.batched and rb != r):
            return None              # a batch axis would move away from axis 0
        out = []
        for i in range(r):
            da = a.shape[i - (r - ra)] if i >= r - ra else None
            db = b.shape[i - (r - rb)] if i >= r - rb else None
            ba = a.batched and i == r - ra
            bb = b.batched and i == r - rb
            if ba and bb:
                if a.bk != b.bk:
                    return None
                out.append(da)
            elif ba or bb:
                other = db if ba else da
                if other not in (None, 1):
                    return None
                out.append(da if ba else db)
            else:
                if da is None or db is None or da == db or da == 1 or db == 1:
                    out.append(max(da or 1, db or 1))
                else:
                    return None
        batched = a.batched or b.batched
        if batched:
            lead = (r - a.rank) if a.batched else (r - b.rank)
            if lead != 0:
                return None          # the batch must stay in dim 0
        return tuple(out), batched, a.bk if a.batched else b.bk

    def partner(self, sc, x, allow_scalar=True):
        """A value (text, T) that broadcasts with x: from the pool or made here."""
        opts = [v for v in sc.pool() if v is not x and self.bcast(x, v) and
                self.bcast(x, v)[0] == x.shape and self.bcast(x, v)[1] == x.batched]
        choice = self.r.random()
        if opts and choice < 0.45:
            v = self.r.choice(opts)
            return v.ex, v
        if allow_scalar and choice < 0.55:
            c = self.r.choice([0.5, 2.0, -1.5, 3.0, 0.25])
            return num(c), cst(T(num(c), (), False, "f32", c, c))
        # a suffix shape, possibly with ones
        k = self.r.randint(0, x.rank - (1 if x.batched else 0))
        shp = list(x.shape[x.rank - k:]) if k else []
        shp = [d if self.chance(0.7) else 1 for d in shp]
        if x.batched and self.chance(0.3):
            shp = [1] + list(x.shape[1:])
            shp = [d if i == 0 or self.chance(0.7) else 1 for i, d in enumerate(shp)]
        what = self.r.random()
        if what < 0.45 and shp:
            # sizes as constants: dim(x, axis) and x.shape[axis] of the value it meets
            texts = [str(d) for d in shp]
            if x.ex.isidentifier() and sc.kind != "loop" and self.chance(0.4):
                for i in range(len(shp)):
                    ax = x.rank - len(shp) + i
                    if shp[i] == x.shape[ax] and not (x.batched and ax == 0) and self.chance(0.5):
                        texts[i] = self.r.choice(["dim(%s, %d)" % (x.ex, ax - x.rank), "%s.shape[%d]" % (x.ex, ax)])
            t = self.explicit_param_here(sc, tuple(shp), texts)
            if t is not None:
                return t.ex, t
        if what < 0.6:
            c = self.r.choice([0.5, 1.5, -0.75])
            f = "full(%s, %s)" % ("[" + ", ".join(map(str, shp)) + "]", num(c)) if shp else num(c)
            return f, cst(T(f, tuple(shp), False, "f32", c, c))
        if what < 0.75 and x.batched and sc.bname and x.bk == 1:
            full = "[" + ", ".join([sc.bname] + [str(d) for d in x.shape[1:]]) + "]"
            if self.chance(0.5):
                return "rand(%s)" % full, T("", x.shape, True, "f32", 0, 1)
            return "randn(%s)" % full, T("", x.shape, True, "f32", -6, 6)
        if what < 0.9 and x.rank >= 1 and not (x.batched and x.rank == 1):
            ax = self.r.randint(1 if x.batched else 0, x.rank - 1)
            f = "mean(%s, axis=%d, keepdim=true)" % (x.ex, ax)
            shp2 = tuple(1 if i == ax else d for i, d in enumerate(x.shape))
            self.use(x)
            return f, x.like(f, shape=shp2)
        t = self.explicit_param_here(sc, tuple(shp)) if shp else None
        if t:
            return t.ex, t
        return "1.0", T("1.0", (), False, "f32", 1, 1)

    def explicit_param_here(self, sc, shape, dim_texts=None):
        """An explicit parameter usable in sc: declared in the enclosing model, block or
        entry body (a loop body captures it; the loop header is emitted after its body,
        so the declaration lands before the loop)."""
        home = sc
        while home.kind == "loop":
            home = home.parent
        if home.kind == "entry":
            return None              # 'param' is model and block only
        return self.explicit_param(home, shape, dim_texts=dim_texts)

    # ------------------------------------------------------------------ ops on x
    # Each returns (kind, text builder, result T) or None.  kind "call": builder(xtext,
    # pipe) gives f(x, ...) or x |> f(...); kind "infix": builder(xtext) gives text.

    def call(self, f, args=(), kw=()):
        rest = list(args) + ["%s=%s" % kv for kv in kw]

        def build(xt, pipe):
            if pipe:
                return "%s |> %s" % (xt, f) if not rest else "%s |> %s(%s)" % (xt, f, ", ".join(rest))
            return "%s(%s)" % (f, ", ".join([xt] + rest))
        return build

    def op_unary(self, sc, x):
        r = self.r
        f = r.choice(["relu", "sigmoid", "tanh", "gelu", "softplus", "abs", "square", "leaky_relu", "elu",
                      "exp", "log", "sqrt", "neg", "clamp", "pow", "powop", "softmax", "log_softmax",
                      "stop_gradient", "dropout", "scale", "bdiv"])
        lo, hi = x.lo, x.hi
        if x.const and f in ("relu", "abs", "leaky_relu", "elu", "clamp"):
            return None
        if f == "relu":
            return "call", self.call("relu"), x.like("", lo=max(lo, 0), hi=max(hi, 0))
        if f == "sigmoid":
            return "call", self.call("sigmoid"), x.like("", lo=sig(lo), hi=sig(hi))
        if f == "tanh":
            return "call", self.call("tanh"), x.like("", lo=math.tanh(lo), hi=math.tanh(hi))
        if f == "gelu":
            return "call", self.call("gelu"), x.like("", lo=-0.17, hi=max(hi, 0))
        if f == "softplus":
            return "call", self.call("softplus"), x.like("", lo=softplus(lo), hi=softplus(hi))
        if f == "abs":
            a = 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))
            return "call", self.call("abs"), x.like("", lo=a, hi=x.mag)
        if f == "square":
            a = 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)) ** 2
            if x.mag ** 2 > BIG:
                return None
            return "call", self.call("square"), x.like("", lo=a, hi=x.mag ** 2)
        if f == "leaky_relu":
            s = r.choice([0.01, 0.1, 0.3])
            kw = [] if s == 0.01 and self.chance(0.5) else [("slope", num(s))]
            return "call", self.call("leaky_relu", kw=kw), x.like("", lo=min(lo, lo * s), hi=max(hi, hi * s))
        if f == "elu":
            a = r.choice([1.0, 0.5, 1.5])
            kw = [] if a == 1.0 and self.chance(0.5) else [("alpha", num(a))]
            return "call", self.call("elu", kw=kw), x.like("", lo=min(lo, a * (math.exp(min(lo, 0)) - 1)), hi=max(hi, 0))
        if f == "exp":
            if hi > 6:
                return None
            return "call", self.call("exp"), x.like("", lo=math.exp(lo), hi=math.exp(hi))
        if f in ("log", "sqrt"):
            if lo < 0.05:
                return None
            fn = math.log if f == "log" else math.sqrt
            return "call", self.call(f), x.like("", lo=fn(lo), hi=fn(hi))
        if f == "neg":
            return "infix", lambda xt: "-%s" % xt, x.like("", lo=-hi, hi=-lo)
        if f == "clamp":
            a = r.choice([-1.0, -0.5, 0.0, 0.1])
            b = a + r.choice([0.5, 1.0, 2.0])
            return "call", self.call("clamp", [num(a), num(b)]), x.like("", lo=min(max(lo, a), b), hi=max(min(hi, b), a))
        if f in ("pow", "powop"):
            p = r.choice([2, 3, 0.5, 1.5, -1, -0.5, 2.5])
            if p != int(p) or p < 0:
                if lo < 0.1:
                    return None
                vals = [lo ** p, hi ** p]
            else:
                p = int(p)
                vals = [lo ** p, hi ** p] + ([0.0] if lo <= 0 <= hi else [])
            if max(abs(v) for v in vals) > BIG:
                return None
            ps = str(p) if p == int(p) else num(p)
            if f == "pow":
                return "call", self.call("pow", [ps]), x.like("", lo=min(vals), hi=max(vals))
            return "infix", lambda xt: "%s ** %s" % (xt, ps if p > 0 else "(%s)" % ps), x.like("", lo=min(vals), hi=max(vals))
        if f in ("softmax", "log_softmax"):
            if x.rank < 1:
                return None
            if f == "softmax":
                return "call", self.call(f), x.like("", lo=0, hi=1)
            return "call", self.call(f), x.like("", lo=-(hi - lo) - math.log(x.shape[-1]) - 0.01, hi=0)
        if f == "stop_gradient":
            if not self.chance(0.3):
                return None
            # the value still moves when gradcheck moves a parameter or input: central
            # differences see the path that the analytic gradient cuts
            self.gradcheck = False
            return "call", self.call(f), x.like("")
        if f == "dropout":
            p = r.choice([0.0, 0.1, 0.3, 0.5])
            args = [] if p == 0.5 and self.chance(0.3) else [num(p) if self.chance(0.5) else "p=" + num(p)]
            k = 1 / (1 - p)
            return "call", self.call("dropout", args), x.like("", lo=min(0, lo * k), hi=max(0, hi * k))
        if f == "scale":
            c = r.choice([0.5, 2.0, -1.5, 0.1, 3.0])
            form = r.randint(0, 4)
            if form == 0:
                return "infix", lambda xt: "%s * %s" % (xt, num(c)), x.like("", lo=min(lo * c, hi * c), hi=max(lo * c, hi * c))
            if form == 1:
                return "infix", lambda xt: "%s * %s" % (num(c), xt), x.like("", lo=min(lo * c, hi * c), hi=max(lo * c, hi * c))
            if form == 2:
                return "infix", lambda xt: "%s + %s" % (xt, num(c)), x.like("", lo=lo + c, hi=hi + c)
            if form == 3:
                return "infix", lambda xt: "%s - %s" % (num(c), xt), x.like("", lo=c - hi, hi=c - lo)
            if lo >= 0.1 or hi <= -0.1:
                return "infix", lambda xt: "%s / %s" % (num(c), xt), x.like("", lo=min(c / lo, c / hi), hi=max(c / lo, c / hi))
            return "infix", lambda xt: "%s / %s" % (xt, num(c)), x.like("", lo=min(lo / c, hi / c), hi=max(lo / c, hi / c))
        if f == "bdiv":
            # the batch constant as a number is the runtime batch size
            if not sc.bname:
                return None
            if self.chance(0.5):
                return "infix", lambda xt: "%s / %s" % (xt, sc.bname), x.like("", lo=min(lo, 0), hi=max(hi, 0))
            if "b_frac" in self.features and self.chance(0.5):
                # a number computed from B is the runtime batch too: divisors >= 0.5
                form = self.r.choice(["%s * (0.5 * %s)", "%s / (%s / 2)", "%s / (%s + 1)", "%s * (%s - 1)"])
                m = max(1.0, self.B) * 2
                if x.mag * m > BIG:
                    return None
                return "infix", lambda xt: form % (xt, sc.bname), x.like("", lo=min(lo * m, 0), hi=max(hi * m, 0))
            m = self.B
            if x.mag * m > BIG:
                return None
            return "infix", lambda xt: "%s * %s" % (xt, sc.bname), x.like("", lo=min(lo * m, lo, 0), hi=max(hi * m, hi, 0))
        return None

    def op_binary(self, sc, x):
        yt, y = self.partner(sc, x)
        res = self.bcast(x, y)
        if not res:
            return None
        shape, batched, bk = res
        op = self.r.choice(["+", "-", "*", "/", "maximum", "minimum", "+", "*"])
        if op == "+":
            lo, hi = x.lo + y.lo, x.hi + y.hi
        elif op == "-":
            lo, hi = x.lo - y.hi, x.hi - y.lo
        elif op == "*":
            lo, hi = self.iv_mul(x, y)
        elif op == "/":
            if not (y.lo >= 0.1 or y.hi <= -0.1):
                # make the divisor safe
                yt = "(1.5 + tanh(%s))" % yt
                y = T("", y.shape, y.batched, "f32", 0.5, 2.5, y.bk)
            inv = T("", y.shape, y.batched, "f32", min(1 / y.lo, 1 / y.hi), max(1 / y.lo, 1 / y.hi))
            lo, hi = self.iv_mul(x, inv)
        else:
            f = max if op == "maximum" else min
            lo, hi = f(x.lo, y.lo), f(x.hi, y.hi)
        if not self.ok(lo, hi):
            return None
        if op in ("maximum", "minimum") and x.const and y.const:
            return None
        self.use(y if y.ex else None)
        t = T("", shape, batched, "f32", lo, hi, bk)
        t.const = x.const and y.const
        if op in ("maximum", "minimum"):
            swap = self.chance(0.3)
            return "call", (lambda xt, pipe: "%s(%s, %s)" % (op, yt, xt) if swap else
                            ("%s |> %s(%s)" % (xt, op, yt) if pipe else "%s(%s, %s)" % (op, xt, yt))), t
        if self.chance(0.2) and op in ("+", "*"):
            return "infix", lambda xt: "%s %s %s" % (yt, op, xt), t
        return "infix", lambda xt: "%s %s %s" % (xt, op, yt), t

    def layer_name(self, sc, kind, key):
        """name= for a layer: None (automatic), a shared name (same key), or a fresh one."""
        if sc.kind == "entry":
            # automatic names in an entry would collide with the model body's
            shared = [n for n, k in sc.layers.items() if k == (kind,) + key]
            shared += [n for n, k in self.model_layers.items() if k == (kind,) + key]
            if shared and self.chance(0.5):
                return self.r.choice(shared)
            nm = "%s_%s%d" % (sc.entry, kind, len(sc.layers) + 1)
            sc.layers[nm] = (kind,) + key
            return nm
        shared = [n for n, k in sc.layers.items() if k == (kind,) + key]
        if shared and self.chance(0.6):
            return self.r.choice(shared)
        if self.chance(0.2):
            self.layer_n += 1
            nm = "%s_l%d" % (kind, self.layer_n)
            sc.layers[nm] = (kind,) + key
            return nm
        return None

    def op_linear(self, sc, x):
        if x.rank < 1 or x.rank == 1 and x.batched:
            return None
        d_in = x.shape[-1]
        out = self.r.randint(1, 7)
        bias = self.chance(0.85)
        nm = self.layer_name(sc, "fc", (d_in, out, bias))
        kw = ([] if bias else [("bias", "false")]) + ([("name", '"%s"' % nm)] if nm else [])
        b = math.sqrt(d_in) * x.mag + (1 / math.sqrt(d_in) if bias else 0) + 0.1
        if b > BIG:
            return None
        return "call", self.call("linear", [str(out)], kw), x.like("", shape=x.shape[:-1] + (out,), lo=-b, hi=b)

    def op_matmul(self, sc, x):
        if x.rank != 2 or (x.batched and x.bk != 1 and False):
            return None
        K = x.shape[1]
        N = self.r.randint(1, 6)
        opts = [v for v in sc.pool() if v.rank == 2 and not v.batched and v.shape[0] == K and v is not x]
        if opts and self.chance(0.5):
            w = self.r.choice(opts)
            wt = w.ex
            N = w.shape[1]
        else:
            w = self.explicit_param_here(sc, (K, N))
            if w is None:
                return None
            wt = w.ex
        b = K * x.mag * w.mag
        if b > BIG:
            return None
        self.use(w)
        t = x.like("", shape=(x.shape[0], N), lo=-b, hi=b)
        if self.chance(0.5):
            return "infix", lambda xt: "%s @ %s" % (xt, wt), t
        return "call", self.call("matmul", [wt]), t

    def op_conv(self, sc, x):
        if x.rank != 4:
            return None
        C, H, W = x.shape[1:]
        k = self.r.choice([1, 2, 3])
        pad = self.r.choice([0, 0, 1]) if k > 1 else 0
        stride = self.r.choice([1, 1, 2])
        if H + 2 * pad < k or W + 2 * pad < k:
            return None
        oh, ow = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
        out = self.r.randint(1, 4)
        bias = self.chance(0.8)
        nm = self.layer_name(sc, "conv", (C, out, k, bias))
        args = [str(out), str(k)]
        kw = ([("stride", str(stride))] if stride != 1 else []) + ([("pad", str(pad))] if pad else [])
        kw += ([] if bias else [("bias", "false")]) + ([("name", '"%s"' % nm)] if nm else [])
        fan = C * k * k
        b = math.sqrt(fan) * x.mag + 0.1 + 1 / math.sqrt(fan)
        if b > BIG:
            return None
        return "call", self.call("conv2d", args, kw), x.like("", shape=(x.shape[0], out, oh, ow), lo=-b, hi=b)

    def op_pool(self, sc, x):
        if x.rank != 4:
            return None
        H, W = x.shape[2:]
        f = self.r.choice(["maxpool2d", "avgpool2d", "global_avgpool"])
        if f == "maxpool2d" and x.const:
            f = "avgpool2d"
        if f == "global_avgpool":
            return "call", self.call(f), x.like("", shape=x.shape[:2])
        k = self.r.choice([1, 2, 2, 3])
        pad = self.r.choice([0, 0, 1]) if k >= 2 else 0
        stride = self.r.choice([None, 1, 2])
        st = stride or k
        if H + 2 * pad < k or W + 2 * pad < k:
            return None
        oh, ow = (H + 2 * pad - k) // st + 1, (W + 2 * pad - k) // st + 1
        args = [str(k)]
        kw = ([("stride", str(stride))] if stride else []) + ([("pad", str(pad))] if pad else [])
        lo, hi = x.lo, x.hi
        if f == "avgpool2d" and pad:
            lo, hi = min(lo, 0), max(hi, 0)
        return "call", self.call(f, args, kw), x.like("", shape=(x.shape[0], x.shape[1], oh, ow), lo=lo, hi=hi)

    def op_batchnorm(self, sc, x):
        if not (2 <= x.rank <= 4) or not x.batched:
            return None
        C = x.shape[1]
        cnt = x.shape[0]
        for d in x.shape[2:]:
            cnt *= d
        kw = []
        if self.chance(0.3):
            kw.append(("eps", self.r.choice(["1e-3", "0.01"])))
        if self.chance(0.3):
            kw.append(("momentum", self.r.choice(["0.5", "0.0", "1.0"])))
        nm = self.layer_name(sc, "bn", (C,))
        if nm:
            kw.append(("name", '"%s"' % nm))
        b = max(math.sqrt(cnt), 2 * x.mag / math.sqrt(0.3) + 3) + 0.5
        # train mode: |x^| <= sqrt(n); eval mode: running stats are an average of batch
        # means and variances (momentum 1.0 keeps only the last), so bound that too
        if b > BIG:
            return None
        t = x.like("", lo=-b, hi=b)
        t.bn = True
        return "call", self.call("batchnorm", [], kw), t

    def op_reduce(self, sc, x):
        f = self.r.choice(["sum", "mean"])
        if x.rank == 0:
            return None
        r = self.chance(0.25)
        if r or x.rank == 1 and x.batched and self.chance(0.5):
            # over everything: a scalar
            cnt = 1
            for d in x.shape:
                cnt *= d
            k = cnt if f == "sum" else 1
            if x.mag * k > BIG:
                return None
            t = T("", (), False, "f32", min(x.lo * k, x.lo), max(x.hi * k, x.hi))
            t.const = x.const or x.bn
            return "call", self.call(f), t
        axes = list(range(x.rank))
        if x.batched and self.chance(0.8):
            axes = axes[1:]
        if not axes:
            return None
        n = self.r.randint(1, min(2, len(axes)))
        ax = sorted(self.r.sample(axes, n))
        keep = self.chance(0.3)
        cnt = 1
        for a in ax:
            cnt *= x.shape[a]
        k = cnt if f == "sum" else 1
        if x.mag * k > BIG:
            return None
        shp = tuple((1 if i in ax else d) for i, d in enumerate(x.shape) if keep or i not in ax)
        batched = x.batched and 0 not in ax
        neg = self.chance(0.3)
        axt = [str(a - x.rank) if neg else str(a) for a in ax]
        axs = axt[0] if len(ax) == 1 and self.chance(0.6) else "[" + ", ".join(axt) + "]"
        kw = [("axis", axs)] + ([("keepdim", "true")] if keep else [])
        if not shp and not keep:
            batched = False
        t = T("", shp, batched, "f32", min(x.lo * k, x.lo), max(x.hi * k, x.hi), x.bk if batched else 1)
        if x.batched and 0 in ax and keep:
            t.batched = False
        t.const = x.const or (x.bn and x.batched and 0 in ax)
        return "call", self.call(f, [], kw), t

    def op_reshape(self, sc, x):
        if x.rank < 1:
            return None
        f = self.r.choice(["flatten", "reshape", "reshape", "transpose", "transpose", "bcast"])
        if f == "flatten":
            if x.rank < 2:
                return None
            n = 1
            for d in x.shape[1:]:
                n *= d
            return "call", self.call("flatten"), x.like("", shape=(x.shape[0], n) if x.rank >= 3 else x.shape)
        if f == "reshape":
            if x.batched:
                n = 1
                for d in x.shape[1:]:
                    n *= d
                if self.chance(0.15) and x.bk == 1 and n > 1 and sc.bname:
                    # fold a factor into the batch: [B * k, ...]
                    fs = [d for d in range(2, n + 1) if n % d == 0]
                    k = self.r.choice(fs)
                    t = x.like("", shape=(x.shape[0] * k, n // k), bk=k)
                    return "call", self.call("reshape", ["[%s * %d, %d]" % (sc.bname, k, n // k)]), t
                dims = self.factor(n)
                txt = [str(d) for d in dims]
                if self.chance(0.3) and dims:
                    txt[self.r.randrange(len(txt))] = "-1"
                bd = sc.bname if x.bk == 1 else "%s * %d" % (sc.bname, x.bk)
                if not sc.bname:
                    return None
                return "call", self.call("reshape", ["[" + ", ".join([bd] + txt) + "]"]), x.like("", shape=(x.shape[0],) + tuple(dims))
            n = 1
            for d in x.shape:
                n *= d
            dims = self.factor(n) or [1]
            txt = [str(d) for d in dims]
            if self.chance(0.3):
                txt[self.r.randrange(len(txt))] = "-1"
            return "call", self.call("reshape", ["[" + ", ".join(txt) + "]"]), x.like("", shape=tuple(dims))
        if f == "transpose":
            lo = 1 if x.batched else 0
            if x.rank - lo < 2:
                return None
            rest = list(range(lo, x.rank))
            perm = rest[:]
            while perm == rest:
                self.r.shuffle(perm)
            perm = list(range(lo)) + perm
            shp = tuple(x.shape[p] for p in perm)
            if x.rank == 2 and not x.batched and self.chance(0.5):
                return "call", self.call("transpose"), x.like("", shape=shp)
            return "call", self.call("transpose", ["[" + ", ".join(map(str, perm)) + "]"]), x.like("", shape=shp)
        # broadcast_to: grow size-1 dims, or add leading dims (unbatched)
        if x.batched:
            if "broadcast_b" not in self.features or not sc.bname or x.bk != 1:
                return None
            shp = tuple(d if d != 1 or i == 0 else self.r.randint(2, 3) for i, d in enumerate(x.shape))
            # -1 keeps an axis of x
            txt = [sc.bname] + [("-1" if d == x.shape[i + 1] and self.chance(0.3) else str(d)) for i, d in enumerate(shp[1:])]
            return "call", self.call("broadcast_to", ["[" + ", ".join(txt) + "]"]), x.like("", shape=shp)
        shp = tuple(d if d != 1 else self.r.randint(1, 3) for d in x.shape)
        if self.chance(0.4) or shp == x.shape:
            shp = (self.r.randint(2, 3),) + shp
        if len(shp) > 6:
            return None
        if self.chance(0.3) and "broadcast_b" in self.features and sc.bname:
            t = T("", (self.B,) + shp, True, "f32", x.lo, x.hi)
            return "call", self.call("broadcast_to", ["[" + ", ".join([sc.bname] + [str(d) for d in shp]) + "]"]), t
        return "call", self.call("broadcast_to", ["[" + ", ".join(map(str, shp)) + "]"]), x.like("", shape=shp)

    def factor(self, n):
        """A random list of dims with product n (at most 3)."""
        dims = []
        while n > 1 and len(dims) < 2:
            fs = [d for d in range(2, n + 1) if n % d == 0]
            d = self.r.choice(fs)
            if self.chance(0.3):
                d = n
            dims.append(d)
            n //= d
        if n > 1:
            dims.append(n)
        if self.chance(0.2):
            dims.insert(self.r.randrange(len(dims) + 1), 1)
        return dims

    def op_index(self, sc, x):
        lo = 1 if x.batched else 0
        if x.rank - lo < 1:
            return None
        idx = [":"] * x.rank
        shp = list(x.shape)
        drop = []
        for ax in range(lo, x.rank):
            if not self.chance(0.6):
                continue
            d = x.shape[ax]
            k = self.r.random()
            if k < 0.4:
                i = self.r.randrange(d)
                idx[ax] = str(i - d if self.chance(0.3) else i)
                drop.append(ax)
            elif k < 0.8 and d >= 2:
                a = self.r.randrange(d)
                b = self.r.randint(a + 1, d)
                s = self.r.choice([1, 1, 2])
                txt = "%s:%s" % (a if a or self.chance(0.5) else "", b if b != d or self.chance(0.5) else "")
                if s != 1:
                    txt += ":%d" % s
                idx[ax] = txt
                shp[ax] = (b - a + s - 1) // s
        if idx == [":"] * x.rank:
            return None
        shp = [d for i, d in enumerate(shp) if i not in drop]
        t = x.like("", shape=tuple(shp))
        if not shp:
            t.batched = False
        txt = ", ".join(idx)
        while txt.endswith(", :") and self.chance(0.3):
            txt = txt[:-3]
        return "infix", lambda xt: "%s[%s]" % (xt, txt), t

    def op_concat(self, sc, x):
        if x.rank < 1:
            return None
        lo = 1 if x.batched else 0
        if x.rank - lo < 1:
            return None
        ax = self.r.randrange(lo, x.rank)
        parts, total = [], x.shape[ax]
        others = [v for v in sc.pool() if v is not x and v.rank == x.rank and v.batched == x.batched and
                  v.bk == x.bk and all(v.shape[i] == x.shape[i] for i in range(x.rank) if i != ax)]
        for _ in range(self.r.randint(1, 2)):
            if others and self.chance(0.6):
                v = self.r.choice(others)
                parts.append(v.ex)
                self.use(v)
                total += v.shape[ax]
                lo_, hi_ = min(x.lo, v.lo), max(x.hi, v.hi)
            else:
                parts.append("tanh(%s)" % x.ex if self.chance(0.5) else x.ex)
                total += x.shape[ax]
                lo_, hi_ = min(x.lo, -1), max(x.hi, 1)
        shp = tuple(total if i == ax else d for i, d in enumerate(x.shape))
        axs = str(ax - x.rank) if self.chance(0.3) else str(ax)
        t = x.like("", shape=shp, lo=lo_, hi=hi_)
        first = self.chance(0.7)

        def build(xt, pipe):
            lst = [xt] + parts if first else parts + [xt]
            kw = "" if ax == x.rank - 1 and self.chance(0.5) else ", axis=%s" % axs
            return "concat([%s]%s)" % (", ".join(lst), kw)
        return "call", build, t

    def op_cell(self, sc, x):
        """rnn_cell / gru_cell / lstm_cell on a [N, D] input with a state from the pool."""
        if x.rank != 2:
            return None
        N = x.shape[0]
        H = self.r.randint(1, 5)
        hs = [v for v in sc.pool() if v.rank == 2 and v.batched == x.batched and v.shape[0] == N and v.bk == x.bk]
        if hs and self.chance(0.6):
            h = self.r.choice(hs)
            H = h.shape[1]
            ht = h.ex
        elif x.batched and x.bk != 1:
            return None              # a state of [B * k, H] comes from the pool only
        elif x.batched and sc.bname:
            ht = self.r.choice(["zeros([%s, %d])" % (sc.bname, H), "randn([%s, %d])" % (sc.bname, H)])
            h = T(ht, (N, H), True, "f32", -6, 6)
        elif not x.batched:
            ht = "zeros([%d, %d])" % (N, H)
            h = cst(T(ht, (N, H), False, "f32", 0, 0))
        else:
            return None
        f = self.r.choice(["rnn_cell", "gru_cell", "lstm_cell"])
        nm = self.layer_name(sc, f[:3], (x.shape[1], H))
        kw = [("name", '"%s"' % nm)] if nm else []
        args = [ht]
        if self.chance(0.2):
            args.append(str(H))
        self.use(h if h.ex and h.ex[0] == "v" else None)
        if f == "rnn_cell":
            return "call", self.call(f, args, kw), x.like("", shape=(N, H), lo=-1, hi=1)
        if f == "gru_cell":
            return "call", self.call(f, args, kw), x.like("", shape=(N, H), lo=min(-1, h.lo), hi=max(1, h.hi))
        # lstm: a tuple; take h' (or c') by indexing
        if x.batched:
            c = "zeros([%s, %d])" % (sc.bname, H) if sc.bname and x.bk == 1 else "0.5 * %s" % ht
        else:
            c = "zeros([%d, %d])" % (N, H)
        which = self.r.choice([0, 1])
        args = [ht, c] + args[1:]
        b = 1.0 if which == 0 else 1.0
        t = x.like("", shape=(N, H), lo=-b, hi=b)
        base = self.call(f, args, kw)
        return "infix", lambda xt: "%s[%d]" % (base(xt, False), which), t

    def op_block(self, sc, x):
        if len(self.block_stack) >= 2:
            return None
        usable = [b for b in self.blocks if b.sig[0] == (x.shape, x.batched, x.bk) and b.fits(0, x)
                  and b not in self.block_stack
                  and not (sc.in_loop and b.has_loop) and (sc.bname or not b.needs_b)]
        if usable and self.chance(0.6):
            b = self.r.choice(usable)
        else:
            b = self.make_block(sc, x)
            if b is None:
                return None
        return self.call_block(sc, x, b)

    def call_block(self, sc, x, b, in_entry=False):
        args = []
        for i, (shape, batched, bk) in enumerate(b.sig[1:]):
            opts = [v for v in sc.pool() if v.shape == shape and v.batched == batched and v.bk == bk and b.fits(i + 1, v)]
            if opts:
                v = self.r.choice(opts)
                self.use(v)
                args.append(v.ex)
            else:
                return None
        if b.needs_b:
            args.append(sc.bname)
        for (cn, cv, has_def) in b.consts:
            if not has_def or self.chance(0.5):
                args.append(str(cv) if self.chance(0.7) else "%s=%d" % (cn, cv))
        kw = []
        if not in_entry and sc.kind != "entry" and self.chance(0.3) and b.calls > 0 and b.shared_name:
            kw.append(("name", '"%s"' % b.shared_name))
        elif not in_entry and sc.kind != "entry" and self.chance(0.2) and not b.shared_name:
            b.shared_name = "%s_s" % b.name
            kw.append(("name", '"%s"' % b.shared_name))
        b.calls += 1
        if sc.kind == "entry" and not in_entry:
            return None
        r = b.ret[self.r.randrange(len(b.ret))] if len(b.ret) > 1 else b.ret[0]
        t = r.like("")
        if len(b.ret) > 1:
            k = b.ret.index(r)
            base = self.call(b.name, args, kw)
            return "infix", lambda xt: "%s[%d]" % (base(xt, False), k), t, base
        return "call", self.call(b.name, args, kw), t

    # ------------------------------------------------------------------ statements
    OPS = [("unary", 26), ("binary", 20), ("linear", 14), ("reduce", 5), ("reshape", 7), ("index", 4),
           ("concat", 4), ("matmul", 3), ("conv", 6), ("pool", 4), ("batchnorm", 3), ("cell", 4),
           ("block", 3)]

    def one_op(self, sc, x):
        names, weights = zip(*self.OPS)
        for _ in range(8):
            k = self.r.choices(names, weights)[0]
            res = getattr(self, "op_" + k)(sc, x)
            if res is not None and self.ok(res[2].lo, res[2].hi):
                return res
        return None

    def statement(self, sc):
        """One assignment: a chain of 1-3 ops on a value from the pool."""
        x = self.pick(sc)
        if x is None:
            return
        if x.mag > SQUASH and self.chance(0.7):
            cur, t, pipe = "tanh(%s)" % x.ex, x.like("", lo=-1, hi=1), False
        else:
            cur, t, pipe = x.ex, x, False
        self.use(x)
        n = self.r.choice([1, 1, 1, 2, 2, 3])
        done = 0
        for _ in range(n):
            if not t.ex:
                t.ex = cur               # a link of the chain: keeps its flags
            res = self.one_op(sc, t)
            if res is None:
                break
            kind, build, t2 = res[:3]
            if kind == "infix":
                xt = "(%s)" % cur if (pipe or (done and not cur.isidentifier())) else cur
                cur, pipe = build(xt), False
                cur = "(%s)" % cur if self.chance(0.1) else cur
            else:
                usepipe = self.chance(0.4)
                xt = cur if usepipe or not pipe else cur
                cur, pipe = build(xt, usepipe), usepipe
            t = t2
            t.ex = ""
            done += 1
        if done == 0:
            return
        self.assign(sc, cur, t)

    def special_statement(self, sc):
        """Statements that are not a chain: tuple unpacking of an lstm / block, constants."""
        k = self.r.random()
        xs = [v for v in sc.pool() if v.rank == 2]
        if k < 0.5 and xs:
            x = self.r.choice(xs)
            N, H = x.shape[0], self.r.randint(1, 4)
            if x.batched and not sc.bname:
                return
            if x.batched and x.bk != 1:
                return
            bd = sc.bname if x.batched else str(N)
            h0 = self.r.choice(["zeros([%s, %d])" % (bd, H), "ones([%s, %d])" % (bd, H), "full([%s, %d], 0.5)" % (bd, H)])
            nm = self.layer_name(sc, "lst", (x.shape[1], H))
            kw = ', name="%s"' % nm if nm else ""
            h, c = self.fresh(), self.fresh()
            sc.emit("%s, %s = lstm_cell(%s, %s, %s%s)" % (h, c, x.ex, h0, h0, kw))
            self.use(x)
            sc.vals.append(T(h, (N, H), x.batched, "f32", -1, 1))
            sc.vals.append(T(c, (N, H), x.batched, "f32", -2, 2))
            return
        if k < 0.8:
            tuples = [b for b in self.blocks if len(b.ret) > 1 and not (sc.in_loop and b.has_loop) and
                      b not in self.block_stack and (sc.bname or not b.needs_b)]
            for b in tuples:
                xs = [v for v in sc.pool() if (v.shape, v.batched, v.bk) == b.sig[0] and b.fits(0, v)]
                if not xs:
                    continue
                x = self.r.choice(xs)
                res = self.call_block(sc, x, b)
                if not res:
                    return
                call = res[3](x.ex, False)
                names = [self.fresh() for _ in b.ret]
                sc.emit("%s = %s" % (", ".join(names), call))
                self.use(x)
                for nm, r in zip(names, b.ret):
                    sc.vals.append(r.like(nm))
                return
        # a constant or random tensor, batched when the batch is known
        shp = tuple(self.r.randint(1, 4) for _ in range(self.r.randint(1, 3)))
        batched = bool(sc.bname) and self.chance(0.7)
        dims = "[" + ", ".join(([sc.bname] if batched else []) + [str(d) for d in shp]) + "]"
        shape = ((self.B,) if batched else ()) + shp
        f = self.r.choice(["zeros", "ones", "full", "randn", "rand"])
        if f == "full":
            c = self.r.choice([0.5, -2.0, 1.25])
            self.assign(sc, "full(%s, %s)" % (dims, num(c)), cst(T("", shape, batched, "f32", c, c)))
        elif f in ("zeros", "ones"):
            c = 0.0 if f == "zeros" else 1.0
            self.assign(sc, "%s(%s)" % (f, dims), cst(T("", shape, batched, "f32", c, c)))
        elif f == "randn":
            self.assign(sc, "randn(%s)" % dims, T("", shape, batched, "f32", -6, 6))
        else:
            self.assign(sc, "rand(%s)" % dims, T("", shape, batched, "f32", 0, 1))

    def body(self, sc, n):
        for _ in range(n):
            k = self.r.random()
            if k < 0.08:
                self.special_statement(sc)
            elif k < 0.16 and sc.kind in ("model", "block") and not sc.in_loop and self.depth < 1:
                self.loop(sc)
            else:
                self.statement(sc)

    # ------------------------------------------------------------------ blocks
    def make_block(self, sc, x):
        if len(self.blocks) >= 4:
            return None
        self.nblock += 1
        name = "blk%d" % self.nblock
        sig = [(x.shape, x.batched, x.bk)]
        # a second tensor argument sometimes
        extra = [v for v in sc.pool() if v is not x and v.rank >= 1]
        if extra and self.chance(0.35):
            v = self.r.choice(extra)
            sig.append((v.shape, v.batched, v.bk))
        needs_b = bool(sc.bname) and self.chance(0.4)
        b = Block(name, sig, False)
        b.needs_b = needs_b
        b.shared_name = None
        params = ["a%d" % i for i in range(len(sig))]
        # blocks read the model's constants: B itself, or the batch passed as n
        bsc = Scope("block", "n" if needs_b else "B" if sc.bname == "B" and self.chance(0.5) else None, parent=None)
        bsc.block = b
        bsc.in_loop = sc.in_loop          # a block called in a loop body may not loop
        for p, (shape, batched, bk) in zip(params, sig):
            src = x if p == "a0" else v
            a = T(p, shape, batched, "f32", src.lo, src.hi, bk)
            a.const = src.const
            bsc.vals.append(a)
            b.bounds.append((src.lo, src.hi))
            b.consts_in.append(src.const)
        if needs_b:
            params.append("n")
        consts = []
        if self.chance(0.5):
            cv = self.r.randint(1, 5)
            has_def = self.chance(0.5)
            consts.append(("w", cv, has_def))
        b.consts = consts
        self.block_stack.append(b)
        save_depth = self.depth
        self.depth = 1 if sc.in_loop else 0
        bsc.no_loop = sc.in_loop
        if sc.in_loop:
            self.depth = 1
        self.block_width = consts[0][1] if consts else None
        nst = self.r.randint(1, 4)
        for _ in range(nst):
            k = self.r.random()
            if k < 0.1 and not sc.in_loop:
                self.loop(bsc)
                b.has_loop = True
            elif k < 0.25 and consts:
                # a layer whose width is the block's constant
                y = self.pick(bsc)
                if y is not None and y.rank >= 1 and not (y.rank == 1 and y.batched):
                    bb = math.sqrt(y.shape[-1]) * y.mag + 1.1
                    if bb < BIG:
                        self.use(y)
                        self.assign(bsc, "linear(%s, w)" % y.ex, y.like("", shape=y.shape[:-1] + (consts[0][1],), lo=-bb, hi=bb))
            else:
                self.statement(bsc)
        self.depth = save_depth
        self.block_stack.pop()
        # results: the last value, sometimes two
        cands = [v for v in bsc.vals if v.dt == "f32" and v.ex not in params]
        if not cands:
            cands = [bsc.vals[0]]
            rv = [cands[0]]
            bsc.emit("return tanh(%s)" % cands[0].ex)
            rv = [cands[0].like("", lo=-1, hi=1)]
        else:
            rv = [cands[-1]]
            if len(cands) > 1 and self.chance(0.3):
                rv.append(self.r.choice(cands[:-1]))
            bsc.emit("return " + ", ".join(v.ex for v in rv))
        b.ret = [v.like("") for v in rv]
        ps = params + ["%s = %d" % (c[0], c[1]) if c[2] else c[0] for c in consts]
        b.text = "block %s(%s) {\n%s\n}\n" % (name, ", ".join(ps), "\n".join(bsc.lines))
        self.blocks.append(b)
        return b

    # ------------------------------------------------------------------ loops
    def loop(self, sc):
        """A for loop with carries, per-step slices, layers, collections."""
        seqs = [v for v in sc.pool() if v.batched and v.bk == 1 and v.rank >= 3 and v.shape[1] >= 1]
        uns = [v for v in sc.pool() if not v.batched and v.rank >= 1 and v.shape[0] >= 1]
        if not sc.bname and not uns:
            return
        s = self.r.choice(seqs) if seqs and self.chance(0.85) else None
        u = self.r.choice(uns) if uns and (s is None or self.chance(0.2)) else None
        if s is None and u is None:
            return
        L = min(v.shape[1] if v is s else v.shape[0] for v in (s, u) if v is not None)
        # range and the shift of the index
        start = 0 if self.chance(0.7) or L < 2 else 1
        count = self.r.randint(1, L - start)
        rev = self.chance(0.3)
        form = self.r.choice(["t", "t", "t", "shift", "mirror"])
        # index expr and the positions it reaches for t in [start, start + count)
        if form == "shift" and start + count < L:
            idx = "t + 1"
        elif form == "mirror":
            idx = "%d - t" % (start + count - 1)
            if self.chance(0.5) and start == 0 and count == L:
                idx = "%d - 1 - t" % count
        elif start == 1 and self.chance(0.5):
            idx = "t - 1"
        else:
            idx = "t"
        self.use(s, u)
        rng = "%d..%d" % (start, start + count)
        if count == self.T and start == 0 and sc.kind == "model" and self.chance(0.5):
            rng = "0..T"
        if rev:
            rng = "reversed(%s)" % rng
        # carries: existing batched 2-D values (or fresh zeros) re-assigned in the body
        carries = []
        for _ in range(self.r.randint(1, 2)):
            if not sc.bname:
                break
            cands = [v for v in sc.pool() if v.batched and v.bk == 1 and v.rank == 2 and v.ex.startswith("v")]
            H = self.r.randint(1, 4)
            nm = self.fresh("h")
            if cands and self.chance(0.4):
                v = self.r.choice(cands)
                H = v.shape[1]
                sc.emit("%s = %s" % (nm, v.ex if v.mag <= 2 else "tanh(%s)" % v.ex))
                self.use(v)
                lo, hi = (v.lo, v.hi) if v.mag <= 2 else (-1, 1)
            else:
                init = self.r.choice(["zeros", "ones", "randn"])
                sc.emit("%s = %s([%s, %d])" % (nm, init, sc.bname, H))
                lo, hi = {"zeros": (0, 0), "ones": (1, 1), "randn": (-6, 6)}[init]
            carries.append(T(nm, (self.B, H), True, "f32", min(lo, -1), max(hi, 1)))
        body = Scope("loop", sc.bname, parent=sc, indent=sc.indent + "    ")
        body.loop = ("t", start, count, rev)
        # the outer values are captured (every value of the scope, and the carries' old values)
        body.vals = [v for v in sc.vals if v not in carries]
        body.vals += [c for c in carries]
        if s is not None:
            rest = ", ".join([":"] * (s.rank - 2))
            nm = self.fresh("s")
            body.emit("%s = %s[:, %s%s]" % (nm, s.ex, idx, (", " + rest) if rest and self.chance(0.7) else ""))
            body.vals.append(T(nm, (s.shape[0],) + s.shape[2:], True, "f32", s.lo, s.hi))
        if u is not None:
            nm = self.fresh("u")
            body.emit("%s = %s[%s]" % (nm, u.ex, idx))
            body.vals.append(T(nm, u.shape[1:], False, "f32", u.lo, u.hi))
        # the state each step starts from, collected before it changes
        pre = []
        for c in carries:
            if self.chance(0.2):
                nm = self.fresh("c")
                body.emit("%s[t] = %s" % (nm, c.ex))
                ct = T(nm, (c.shape[0], count) + c.shape[1:], True, "f32", c.lo, c.hi)
                ct.collection = True
                pre.append(ct)
        self.depth += 1
        nst = self.r.randint(1, 4)
        for _ in range(nst):
            if self.chance(0.15):
                self.special_statement(body)
            else:
                self.statement(body)
        # new carry values, of the carry's shape, bounded (tanh) so that T steps stay finite
        local = [v for v in body.vals if v not in sc.vals]
        for c in carries:
            src = self.r.choice(local) if local else c
            self.use(src)
            ex = self.to_shape(body, src, c.shape)
            kind = self.r.random()
            if kind < 0.3:
                body.emit("%s = tanh(%s + %s)" % (c.ex, c.ex, ex))
            elif kind < 0.6:
                nmc = self.layer_name(body, "rnn", (c.shape[1], c.shape[1]))
                body.emit("%s = rnn_cell(%s, %s%s)" % (c.ex, ex, c.ex, ', name="%s"' % nmc if nmc else ""))
            elif kind < 0.8:
                body.emit("%s = gru_cell(%s, %s)" % (c.ex, ex, c.ex))
            else:
                body.emit("%s = 0.5 * %s + 0.5 * tanh(%s)" % (c.ex, c.ex, ex))
            c.lo, c.hi = min(c.lo, -1), max(c.hi, 1)
        # collections
        colls = []
        for _ in range(self.r.randint(0 if carries else 1, 2)):
            cands = [v for v in body.vals if v not in sc.vals and v.dt == "f32" and v.bk == 1 and v.rank <= 4]
            if not cands:
                break
            v = self.r.choice(cands)
            nm = self.fresh("c")
            body.emit("%s[t] = %s" % (nm, v.ex))
            self.use(v)
            shp = (v.shape[0], count) + v.shape[1:] if v.batched else (count,) + v.shape
            ct = T(nm, shp, v.batched, "f32", v.lo, v.hi)
            ct.collection = True
            colls.append(ct)
        self.depth -= 1
        sc.emit("for t in %s {" % rng)
        sc.lines.extend(body.lines)
        sc.emit("}")
        # after the loop: carries hold their last value; collections are new values
        for c in carries:
            c.collection = True      # a loop result (see collect_out)
            sc.vals.append(c)
        sc.vals.extend(pre + colls)

    def to_shape(self, sc, v, shape):
        """An expression of shape `shape` ([B, H] batched) computed from v."""
        if v.shape == shape and v.batched:
            return v.ex
        ex = v.ex
        if not v.batched:
            # unbatched: reduce to a vector and broadcast over the batch with a carry-shaped 0
            ex = "mean(%s) + zeros([%s, %d])" % (ex, sc.bname, shape[1])
            return ex
        if v.rank >= 3:
            ex = "flatten(%s)" % ex
        elif v.rank == 1:
            ex = "reshape(%s, [%s, 1])" % (ex, sc.bname)
        if v.bk != 1:
            return "mean(%s) + zeros([%s, %d])" % (v.ex, sc.bname, shape[1])
        return "linear(tanh(%s), %d)" % (ex, shape[1])

    # ------------------------------------------------------------------ the model
    def inputs(self, sc):
        xs = []
        n = self.r.randint(1, 3)
        for i in range(n):
            k = self.r.random()
            if k < 0.35:
                shp = (self.r.randint(1, 6),)
            elif k < 0.6:
                shp = (self.T + self.r.randint(0, 1), self.r.randint(1, 4))
            elif k < 0.85:
                shp = (self.r.randint(1, 3), self.r.randint(3, 6), self.r.randint(3, 6))
            else:
                shp = (self.r.randint(1, 4), self.r.randint(1, 3))
            bk = 1
            if "bmul_io" in self.features and self.chance(0.1):
                bk = 2
            nm = "x%d" % i
            d = self.B * bk
            t = T(nm, (d,) + shp, True, "f32", -1, 1, bk)
            sc.emit("input %s: f32%s" % (nm, self.dims(sc, t)))
            xs.append(t)
        labels = ids = None
        if self.chance(0.7):
            labels = T("y", (self.B,), True, "i32")
            sc.emit("input y: i32[%s]" % sc.bname)
        if self.chance(0.3):
            L = self.r.randint(1, 4)
            ids = T("ids", (self.B, L) if self.chance(0.7) else (self.B,), True, "i32")
            sc.emit("input ids: i32%s" % self.dims(sc, ids))
        self.r.shuffle(xs)
        sc.vals.extend(xs)
        return xs, labels, ids

    def loss_terms(self, sc, labels):
        terms = []
        pool = [v for v in sc.pool() if v.ex]
        for _ in range(self.r.randint(1, 3)):
            x = self.pick(sc, lambda v: v.rank >= 1 or True)
            if x is None:
                break
            self.use(x)
            xe = x.ex if x.mag <= SQUASH else "tanh(%s)" % x.ex
            xm = min(x.mag, 1.0) if x.mag > SQUASH else x.mag
            k = self.r.random()
            red = self.r.choice([None, None, '"mean"', '"sum"', "sum"])
            redkw = ", reduce=%s" % red if red else ""
            if labels is not None and x.batched and x.bk == 1 and k < 0.35:
                # classifier head: [B, C] logits with C >= classes
                C = self.classes + self.r.randint(0, 2)
                flat = "flatten(%s)" % xe if x.rank >= 3 else ("reshape(%s, [B, 1])" % xe if x.rank == 1 else xe)
                logits = "linear(%s, %d)" % (flat, C)
                if self.chance(0.5):
                    ls = ", label_smoothing=0.1" if self.chance(0.3) else ""
                    terms.append("cross_entropy(%s, y%s%s)" % (logits, ls, redkw))
                else:
                    terms.append("nll(log_softmax(%s), y%s)" % (logits, redkw))
                continue
            if k < 0.65 and x.rank >= 1:
                f = self.r.choice(["mse", "l1", "huber", "bce", "bce_with_logits", "kl_normal"])
                tgt = [v for v in pool if v is not x and v.shape == x.shape and v.batched == x.batched and v.bk == x.bk]
                if f == "kl_normal":
                    if x.rank != 2:
                        f = "mse"
                    else:
                        lv = self.r.choice(tgt) if tgt and self.chance(0.5) else None
                        lve = ("tanh(%s)" % lv.ex) if lv is not None else "zeros(%s)" % self.dims(sc, x) if x.bk == 1 else None
                        if lve is None:
                            f = "mse"
                        else:
                            terms.append("kl_normal(%s, %s%s)" % (xe, lve, redkw))
                            continue
                if tgt and self.chance(0.6):
                    te = self.r.choice(tgt).ex
                    if self.chance(0.1):
                        te = "stop_gradient(%s)" % te
                        self.gradcheck = False
                else:
                    te = "zeros(%s)" % self.dims(sc, x) if x.bk == 1 or not x.batched else None
                    if te is None or self.chance(0.5):
                        te = "0.5 * %s" % xe
                if f == "l1" and x.const:
                    f = "mse"
                if f == "huber":
                    d = ", delta=%s" % num(self.r.choice([0.5, 1.0, 2.0])) if self.chance(0.5) else ""
                    terms.append("huber(%s, %s%s%s)" % (xe, te, d, redkw))
                elif f == "bce":
                    s = "" if xm <= 4 else " / %s" % num(xm / 4)
                    terms.append("bce(sigmoid(%s%s), sigmoid(%s)%s)" % (xe, s, te, redkw))
                elif f == "bce_with_logits":
                    terms.append("bce_with_logits(%s, sigmoid(%s)%s)" % (xe, te, redkw))
                else:
                    terms.append("%s(%s, %s%s)" % (f, xe, te, redkw))
                continue
            f = self.r.choice(["mean", "sum", "mean"])
            e = "%s(%s)" % (f, xe)
            if f == "sum" and self.chance(0.5) and x.batched:
                e += " / B"
            terms.append(e)
        if not terms:
            return None
        out = terms[0]
        for t in terms[1:]:
            c = self.r.choice(["+", "+", "-", "+ 0.5 *"])
            out = "%s %s %s" % (out, c, t)
        if self.chance(0.2):
            out = "(%s) / B" % out
        return out

    def entries(self, sc):
        """Extra entry points: a block called as in the body, shared explicit params,
        shared named layers; the short and the block form."""
        n = self.r.choice([0, 0, 1, 1, 2])
        for i in range(n):
            name = "e%d" % (i + 1)
            esc = Scope("entry", "B", indent="        ")
            esc.entry = name
            esc.layers = {}
            args = []
            k = self.r.randint(1, 2)
            for j in range(k):
                shp = self.r.choice([(self.r.randint(1, 5),), (self.r.randint(1, 3), self.r.randint(1, 3))])
                batched = self.chance(0.85)
                nm = "z%d" % j
                t = T(nm, ((self.B,) if batched else ()) + shp, batched, "f32", -1, 1)
                args.append("%s: f32%s" % (nm, self.dims(esc, t)))
                esc.vals.append(t)
            # blocks called in the body first with the same signature: share their params
            for b in self.blocks:
                if b.first_call is None or b.has_loop and False:
                    continue
            for p in self.model_params:
                if self.chance(0.5):
                    esc.vals.append(p.like(p.ex))
            for _ in range(self.r.randint(1, 3)):
                self.statement(esc)
            outs = [v for v in esc.vals if v.ex.startswith("v") and v.bk == 1]
            if not outs:
                x = esc.vals[0]
                outs = [x.like("tanh(%s)" % x.ex)]
            if len(outs) == 1 and not esc.lines and self.chance(0.7):
                sc.emit("entry %s(%s) = %s" % (name, ", ".join(args), outs[0].ex))
                continue
            sel = self.r.sample(outs, min(len(outs), self.r.randint(1, 2)))
            if not esc.lines or self.chance(0.3) and len(sel) == 1 and len(esc.lines) == 1:
                pass
            sc.emit("entry %s(%s) {" % (name, ", ".join(args)))
            sc.lines.extend(esc.lines)
            for j, v in enumerate(sel):
                # an output that is not a plain name needs one (output <expression> as <name>)
                named = self.chance(0.5) or not v.ex.isidentifier()
                sc.emit("    output %s%s" % (v.ex, " as %s_o%d" % (name, j) if named else ""))
            sc.emit("}")

    def model(self):
        r = self.r
        name = "m%d" % self.seed
        sc = Scope("model", "B")
        self.model_layers = sc.layers
        self.model_params = []
        hdr = ["B = %d" % self.B, "T = %d" % self.T]
        xs, labels, ids = self.inputs(sc)
        if ids is not None:
            vocab = self.classes + r.randint(0, 3)
            dim = r.randint(1, 4)
            nm = self.layer_name(sc, "emb", (vocab, dim))
            kw = ', name="%s"' % nm if nm else ""
            v = self.assign(sc, "embedding(ids, %d, %d%s)" % (vocab, dim, kw),
                            T("", ids.shape + (dim,), True, "f32", -6.05, 6.05))
            del v
        n = r.randint(3, 12)
        for _ in range(n):
            k = r.random()
            if k < 0.07:
                self.special_statement(sc)
            elif k < 0.2:
                self.loop(sc)
            else:
                self.statement(sc)
        self.model_params = list(sc.params)
        # outputs: values of the body (not batch multiples unless bmul_io)
        cands = [v for v in sc.pool() if v.ex and (v.bk == 1 or "bmul_io" in self.features)]
        outs = r.sample(cands, min(len(cands), r.randint(0, 2)))
        has_loss = self.chance(0.95) or not outs
        if not has_loss and not outs:
            outs = cands[:1]
        loss = self.loss_terms(sc, labels) if has_loss else None
        if loss is None and not outs:
            loss = "mean(%s)" % xs[0].ex
        seen = set()
        for v in outs:
            if v.ex in seen:
                continue
            seen.add(v.ex)
            if v.collection and "collect_out" not in self.features:
                # a loop's result read only by `output` is known-broken: read it
                sc.emit("output tanh(%s) as o_%s" % (v.ex, v.ex))
            elif self.chance(0.3):
                sc.emit("output %s as o_%s" % (v.ex, v.ex))
            else:
                sc.emit("output %s" % v.ex)
            v.uses += 1
        if loss:
            sc.emit("loss %s" % loss)
        self.entries(sc)
        if self.chance(0.1):
            sc.emit("train {")
            sc.emit("    optimizer = sgd(lr=0.01)")
            sc.emit("    batch = %d" % self.B)
            sc.emit("}")
        text = "# difftest seed=%d classes=%d gradcheck=%d\n" % (self.seed, self.classes, self.gradcheck)
        text += "".join(b.text for b in self.blocks)
        text += "model %s(%s) {\n%s\n}\n" % (name, ", ".join(hdr), "\n".join(sc.lines))
        return text


def generate(seed, features=()):
    return Gen(seed, features).model()


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description="random CDL model for differential testing")
    ap.add_argument("seed", type=int)
    ap.add_argument("--features", default=os.environ.get("DIFFTEST_FEATURES", ""))
    ap.add_argument("-o", dest="out")
    a = ap.parse_args(argv)
    feats = [f for f in a.features.split(",") if f]
    for f in feats:
        if f not in FEATURES:
            ap.error("unknown feature %s (known: %s)" % (f, ", ".join(FEATURES)))
    text = generate(a.seed, feats)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
