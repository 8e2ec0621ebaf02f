"""Slow, obvious pure-numpy reference of the liquidation-map model: the oracle for the kernels.

It keeps real USD in every bin (no lazy scale), scans whole arrays with masks, and recomputes
every read from scratch. Same model as ``liqsignal.nb.run_nb`` (see DESIGN.md), none of its
shortcuts (running scales, top/bottom bin tracking, running window sums).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from liqsignal import nb
from liqsignal.config import PARAM_NAMES


class ReferenceMap:
    def __init__(self, params: np.ndarray, factors, weights, proxy, n_bins: int) -> None:
        self.p = dict(zip(PARAM_NAMES, params, strict=True))
        self.factors = np.asarray(factors, dtype=float)
        self.weights = np.asarray(weights, dtype=float)
        self.proxy = np.asarray(proxy)
        self.n = n_bins
        n_ex = self.weights.shape[0]
        self.long = np.zeros((n_ex, n_bins))
        self.short = np.zeros((n_ex, n_bins))
        self.prev_oi = np.full(n_ex, np.nan)
        self.origin = None
        self.last_ts = None
        self.nbars = 0
        self.ema_lc = 0.0
        self.ema_sc = 0.0
        self.ema_oi = 0.0
        self.ema_cons = 0.0
        self.dropped = 0.0
        self.since_flush = -1.0

    # grid ------------------------------------------------------------------------------------
    def idx(self, price):
        if self.p["grid_mode"] == 0:
            return (price - self.origin) / self.p["grid_step"]
        return (np.log(price) - self.origin) / self.p["grid_step"]

    def price(self, i):
        if self.p["grid_mode"] == 0:
            return self.origin + np.asarray(i, dtype=float) * self.p["grid_step"]
        return np.exp(self.origin + np.asarray(i, dtype=float) * self.p["grid_step"])

    def spread(self, arr, a, b, mass):
        """Uniform over [a, b] in bin units; returns mass outside the grid."""
        n = self.n
        if b - a <= 1e-9:
            i = math.floor(a + 0.5)
            if 0 <= i < n:
                arr[i] += mass
                return 0.0
            return mass
        i = np.arange(n)
        overlap = np.clip(np.minimum(b, i + 0.5) - np.maximum(a, i - 0.5), 0.0, None)
        add = mass * overlap / (b - a)
        arr += add
        return mass - add.sum()

    def fade(self, now):
        dt = now - self.last_ts
        self.last_ts = now
        if dt > 0:
            f = math.exp(-math.log(2.0) * dt / self.p["half_life_s"])
            self.long *= f
            self.short *= f

    # one run -------------------------------------------------------------------------------
    def run(self, ts: np.ndarray, x: np.ndarray) -> np.ndarray:
        out = np.full((nb.N_OUT, len(ts)), np.nan)
        for t in range(len(ts)):
            self.step(ts[t], x[t], out[:, t])
        return out

    def step(self, now, xt, o):
        p = self.p
        n = self.n
        closes = xt[:, nb.I_CLOSE]
        finite = np.flatnonzero(np.isfinite(closes) & (closes > 0))
        if finite.size == 0:
            if self.origin is not None:
                self.fade(now)
            return
        ref = closes[finite[0]]
        self._ref = ref
        if self.origin is None:
            step = p["grid_step"]
            if p["grid_mode"] == 0:
                self.origin = math.floor(ref / step + 0.5) * step - (n // 2) * step
            else:
                self.origin = (math.floor(math.log(ref) / step + 0.5) - n // 2) * step
            self.last_ts = now
        else:
            ic = self.idx(ref)
            if abs(ic - n / 2.0) > p["recentre_frac"] * n:
                k = math.floor(ic - n / 2.0 + 0.5)
                for arr in (self.long, self.short):
                    new = np.zeros_like(arr)
                    src = np.arange(n) + k
                    ok = (src >= 0) & (src < n)
                    new[:, ok] = arr[:, src[ok]]
                    self.dropped += arr.sum() - new.sum()
                    arr[:] = new
                self.origin = self.origin + k * p["grid_step"]
        pred_l = pred_s = opened = closed = dropped_now = 0.0
        stand_l = stand_s = 0.0
        oi_total = 0.0
        oi_known = 0
        funds = []
        bins = np.arange(n)
        for e in range(xt.shape[0]):
            o_, h, lo, cl = xt[e, :4]
            if not (np.isfinite(cl) and cl > 0):
                continue
            # 1. consume
            m = bins >= self.idx(lo)
            pred_l += self.long[e, m].sum()
            stand_l += self.long[e, m].sum()
            self.long[e, m] = 0.0
            m = bins <= self.idx(h)
            pred_s += self.short[e, m].sum()
            stand_s += self.short[e, m].sum()
            self.short[e, m] = 0.0
            # 2./3. OI change
            tp = (h + lo + cl) / 3.0
            oi = xt[e, nb.I_OI]
            vol = xt[e, nb.I_VOL]
            prev_oi_usd = self.prev_oi[e] * tp
            new_usd = close_usd = 0.0
            if self.proxy[e] == 1:
                if np.isfinite(vol) and vol > 0:
                    new_usd = p["proxy_volume_share"] * vol * tp
            elif np.isfinite(oi):
                if np.isfinite(self.prev_oi[e]):
                    d = (oi - self.prev_oi[e]) * tp
                    new_usd = max(d, 0.0)
                    close_usd = max(-d, 0.0)
                self.prev_oi[e] = oi
                if np.isfinite(vol) and vol > 0 and p["churn_volume_share"] > 0:
                    new_usd += p["churn_volume_share"] * vol * tp
                    close_usd += p["churn_volume_share"] * vol * tp
            if np.isfinite(oi):
                oi_total += oi * cl
                oi_known += 1
            if np.isfinite(xt[e, nb.I_FUND]):
                funds.append(xt[e, nb.I_FUND])
            if new_usd > 0:
                tb = xt[e, nb.I_TAKER]
                if np.isfinite(tb) and np.isfinite(vol) and vol > 0:
                    share_l = min(max(tb / vol, 0.0), 1.0)
                elif cl > o_:
                    share_l = p["direction_long_share"]
                elif cl < o_:
                    share_l = 1.0 - p["direction_long_share"]
                else:
                    share_l = 0.5
                ea = tp - p["entry_spread"] * (tp - lo)
                eb = tp + p["entry_spread"] * (h - tp)
                for side, arr in ((0, self.long[e]), (1, self.short[e])):
                    side_usd = new_usd * (share_l if side == 0 else 1.0 - share_l)
                    if side_usd <= 0:
                        continue
                    for j in range(self.weights.shape[1]):
                        w = self.weights[e, j]
                        if w <= 0:
                            continue
                        fct = self.factors[e, side, j]
                        mass = side_usd * w
                        if fct <= 0:
                            dropped_now += mass
                            continue
                        a = self.idx(ea * fct)
                        b = self.idx(eb * fct)
                        cut = self.idx(lo) if side == 0 else self.idx(h)
                        if b - a > 1e-9:
                            if side == 0:
                                f_in = (b - max(a, cut)) / (b - a)
                            else:
                                f_in = (min(b, cut) - a) / (b - a)
                        else:
                            f_in = 1.0 if (a >= cut if side == 0 else a <= cut) else 0.0
                        f_in = min(max(f_in, 0.0), 1.0)
                        now_liq = p["intrabar_share"] * mass * f_in
                        if side == 0:
                            pred_l += now_liq
                        else:
                            pred_s += now_liq
                        if now_liq > 0 and f_in < 1.0:
                            if side == 0:
                                parts = [
                                    (a, min(b, cut), mass * (1 - f_in)),
                                    (max(a, cut), b, mass * f_in * (1 - p["intrabar_share"])),
                                ]
                            else:
                                parts = [
                                    (max(a, cut), b, mass * (1 - f_in)),
                                    (a, min(b, cut), mass * f_in * (1 - p["intrabar_share"])),
                                ]
                        else:
                            parts = [(a, b, mass - now_liq)]
                        for pa, pb, pm in parts:
                            if pm > 0:
                                dropped_now += self.spread(arr, pa, pb, pm)
                opened += new_usd
            if close_usd > 0:
                tl = self.long[e].sum()
                tsh = self.short[e].sum()
                if p["close_relative"] > 0 and prev_oi_usd > 0:
                    # the same fraction of the map as of open interest
                    close_usd *= min(1.0, (tl + tsh) / prev_oi_usd)
                if p["close_long_share"] < 0:
                    tot = tl + tsh
                    rl = close_usd * tl / tot if tot > 0 else 0.0
                    rs = close_usd * tsh / tot if tot > 0 else 0.0
                else:
                    rl = close_usd * p["close_long_share"]
                    rs = close_usd * (1 - p["close_long_share"])
                for arr, r, total in ((self.long[e], rl, tl), (self.short[e], rs, tsh)):
                    if r <= 0 or total <= 0:
                        continue
                    if r >= total * (1 - 1e-12):
                        arr[:] = 0.0
                        closed += total
                    else:
                        arr *= 1 - r / total
                        closed += r
        self.fade(now)
        self.dropped += dropped_now
        self.nbars += 1
        # 5. read
        L = self.long.sum(axis=0)
        S = self.short.sum(axis=0)
        o[0] = pred_l
        o[1] = pred_s
        o[26] = L.sum()
        o[27] = S.sum()
        o[28] = opened
        o[29] = closed
        o[30] = self.dropped
        o[31] = stand_l
        o[32] = stand_s
        fund = float(np.mean(funds)) if funds else np.nan
        ic = self.idx(ref)
        alpha = p["ema_alpha"]
        for side in (0, 1):
            if side == 0:
                i0 = math.floor(ic)
                m_max = max(i0 - math.ceil(self.idx(ref * (1 - p["scan_range"]))) + 1, 0)
                m_band = max(i0 - math.ceil(self.idx(ref * (1 - p["density_band"]))) + 1, 0)
                m = min(m_max, i0 + 1)
                idxs = i0 - np.arange(max(m, 0))
                arr = L
            else:
                i0 = math.ceil(ic)
                m_max = max(math.floor(self.idx(ref * (1 + p["scan_range"]))) - i0 + 1, 0)
                m_band = max(math.floor(self.idx(ref * (1 + p["density_band"]))) - i0 + 1, 0)
                m = min(m_max, n - i0)
                idxs = i0 + np.arange(max(m, 0))
                arr = S
            if m <= 0 or i0 < 0 or i0 >= n:
                idxs = np.arange(0)
            vals = arr[idxs]
            prices = self.price(idxs)
            dens = vals[:m_band].sum()
            clusters = self._clusters(vals, prices)
            base = 2 if side == 0 else 7
            cbase = 12 if side == 0 else 15
            o[18 + side] = dens
            ema = self.ema_lc if side == 0 else self.ema_sc
            if clusters:
                c0 = clusters[0]
                o[base] = c0[1]
                o[base + 1] = c0[0]
                dist = abs(ref - c0[1]) / ref
                o[base + 2] = dist * 100
                o[base + 3] = min(c0[2], c0[3])
                o[base + 4] = max(c0[2], c0[3])
                depth, cusd, end = 1, c0[0], c0[3]
                for prev, c in itertools.pairwise(clusters):
                    if depth >= p["cascade_max_depth"]:
                        break
                    if abs(c[2] - prev[3]) / ref <= p["cascade_gap"]:
                        depth += 1
                        cusd += c[0]
                        end = c[3]
                    else:
                        break
                o[cbase], o[cbase + 1], o[cbase + 2] = depth, cusd, end
                size_ratio = c0[0] / ema if ema > 0 else 1.0
                has_oi = oi_known > 0 and self.ema_oi > 0
                oi_ratio = oi_total / self.ema_oi if has_oi else 1.0
                prox = max(0.0, 1 - dist / p["armed_distance"])
                score = prox * min(size_ratio, 10.0) * oi_ratio
                ok = dist <= p["armed_distance"] and size_ratio >= p["armed_size_ratio"]
                if has_oi:
                    ok = ok and oi_ratio >= p["armed_oi_ratio"]
                if np.isfinite(fund):
                    ok = ok and (fund if side == 0 else -fund) >= p["armed_funding_min"]
                o[20 + 2 * side] = float(ok)
                o[21 + 2 * side] = score
                cur = c0[0]
            else:
                o[base + 1] = 0.0
                o[cbase] = 0.0
                o[cbase + 1] = 0.0
                o[20 + 2 * side] = 0.0
                o[21 + 2 * side] = 0.0
                cur = 0.0
            new_ema = cur if self.nbars <= 1 else ema + alpha * (cur - ema)
            if side == 0:
                self.ema_lc = new_ema
            else:
                self.ema_sc = new_ema
        cons = pred_l + pred_s
        flush = 0.0
        big = cons >= p["flush_ratio"] * self.ema_cons and cons >= p["flush_min_usd"] and cons > 0
        if self.nbars > 1 and self.ema_cons > 0 and big:
            flush = 1.0 if pred_l >= pred_s else -1.0
        if flush != 0:
            self.since_flush = 0.0
        elif self.since_flush >= 0:
            self.since_flush += 1
        o[24] = flush
        o[25] = self.since_flush if self.since_flush >= 0 else np.nan
        self.ema_cons = cons if self.nbars <= 1 else self.ema_cons + alpha * (cons - self.ema_cons)
        if oi_known > 0:
            if self.ema_oi <= 0:
                self.ema_oi = oi_total
            else:
                self.ema_oi += alpha * (oi_total - self.ema_oi)

    def _wide_bins(self):
        c = self.p["contrast_window"]
        if c <= 0:
            return 0
        if self.p["grid_mode"] == 0:
            return max(1, math.floor(c * self._ref / self.p["grid_step"] + 0.5))
        return max(1, math.floor(math.log1p(c) / self.p["grid_step"] + 0.5))

    def _clusters(self, vals, prices):
        p = self.p
        m = len(vals)
        if m == 0 or vals.sum() <= 0:
            return []
        thr = p["cluster_threshold"] * vals.sum() / m
        h = int(p["smooth_half_bins"])
        sm = np.array([vals[max(0, j - h) : min(m, j + h + 1)].mean() for j in range(m)])
        w = self._wide_bins()
        if w > 0:
            thr = p["cluster_threshold"] * np.array(
                [vals[max(0, j - w) : min(m, j + w + 1)].mean() for j in range(m)]
            )
        dense = np.flatnonzero((sm > 0) & (sm >= thr * (1 - 1e-9)))
        runs = []
        for j in dense:
            if runs and j - runs[-1][1] - 1 <= p["merge_gap_bins"]:
                runs[-1][1] = j
            else:
                runs.append([j, j])
        out = []
        for start, last in runs:
            v = vals[start : last + 1]
            usd = v.sum()
            if usd <= 0 or usd < p["cluster_min_usd"]:
                continue
            wp = (v * prices[start : last + 1]).sum() / usd
            out.append((usd, wp, prices[start], prices[last], last - start + 1))
            if len(out) >= int(p["cascade_max_depth"]) + 1:
                break
        return out
