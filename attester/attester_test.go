package attester

import (
	"bytes"
	"testing"
)

func TestRegularize(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in       []byte
		size     int
		truncate bool
		want     []byte
		wantErr  bool
	}{
		{"pad", []byte{1, 2}, 4, false, []byte{1, 2, 0, 0}, false},
		{"exact", []byte{1, 2, 3, 4}, 4, false, []byte{1, 2, 3, 4}, false},
		{"empty", nil, 3, false, []byte{0, 0, 0}, false},
		{"too long", []byte{1, 2, 3, 4, 5}, 4, false, nil, true},
		{"truncate", []byte{1, 2, 3, 4, 5}, 4, true, []byte{1, 2, 3, 4}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Regularize(tc.in, tc.size, tc.truncate)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("got %x, want %x", got, tc.want)
			}
		})
	}
}
