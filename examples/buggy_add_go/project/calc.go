// Package calc is a tiny calculator with a bug for autodev to find.
package calc

// Add returns the sum of a and b.
func Add(a, b int) int {
	return a - b
}
