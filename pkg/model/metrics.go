package model

import (
	"cmp"
	"slices"
)

// Metrics measure one binary head (or a baseline) on labelled examples.
type Metrics struct {
	Examples  int     `json:"examples"`
	Positives int     `json:"positives"`
	Threshold float64 `json:"threshold"` // score >= Threshold counts as positive
	TP        int     `json:"tp"`
	FP        int     `json:"fp"`
	FN        int     `json:"fn"`
	Precision float64 `json:"precision"` // TP/(TP+FP); 0 when nothing is predicted positive
	Recall    float64 `json:"recall"`
	F1        float64 `json:"f1"`
	PRAUC     float64 `json:"pr_auc"`  // average precision over every distinct score; -1 without both classes
	ROCAUC    float64 `json:"roc_auc"` // probability a positive outscores a negative (ties count half); -1 without both classes
}

// Evaluate computes the metrics of scores against labels (true =
// positive). Equal scores are one threshold: a ranking gets no credit for
// the order it happens to put ties in.
func Evaluate(scores []float64, labels []bool, threshold float64) Metrics {
	m := Metrics{Examples: len(scores), Threshold: threshold}
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
		if labels[i] {
			m.Positives++
		}
		switch pos := scores[i] >= threshold; {
		case pos && labels[i]:
			m.TP++
		case pos:
			m.FP++
		case labels[i]:
			m.FN++
		}
	}
	if m.TP+m.FP > 0 {
		m.Precision = float64(m.TP) / float64(m.TP+m.FP)
	}
	if m.Positives > 0 {
		m.Recall = float64(m.TP) / float64(m.Positives)
	}
	if m.Precision+m.Recall > 0 {
		m.F1 = 2 * m.Precision * m.Recall / (m.Precision + m.Recall)
	}
	neg := m.Examples - m.Positives
	if m.Positives == 0 || neg == 0 {
		m.PRAUC, m.ROCAUC = -1, -1
		return m
	}
	// Descending by score; walk groups of equal scores.
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })
	var tp, fp int
	var ap, auc float64
	for i := 0; i < len(idx); {
		j := i
		gp, gn := 0, 0
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			if labels[idx[j]] {
				gp++
			} else {
				gn++
			}
			j++
		}
		// ROC: this group's positives beat every negative below it and tie
		// with the group's own negatives.
		auc += float64(gp) * (float64(neg-fp-gn) + 0.5*float64(gn))
		tp += gp
		fp += gn
		if gp > 0 {
			ap += float64(gp) / float64(m.Positives) * float64(tp) / float64(tp+fp)
		}
		i = j
	}
	m.PRAUC = ap
	m.ROCAUC = auc / (float64(m.Positives) * float64(neg))
	return m
}
