package labelstore

import (
	"testing"

	"github.com/understudy-ml/understudy/services/platform/servicetest"
)

// TestMain fails the package's tests when a goroutine outlives them.
func TestMain(m *testing.M) { servicetest.VerifyNoLeaks(m) }
