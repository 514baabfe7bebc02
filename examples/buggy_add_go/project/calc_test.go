package calc

import "testing"

func TestSmallNumbers(t *testing.T) {
	if got := Add(2, 3); got != 5 {
		t.Errorf("Add(2, 3) = %d, want 5", got)
	}
}

func TestZero(t *testing.T) {
	if got := Add(0, 7); got != 7 {
		t.Errorf("Add(0, 7) = %d, want 7", got)
	}
}
