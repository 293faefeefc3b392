// Package sample is the attester for machines without a TEE. Its evidence
// proves nothing about the hardware; it only carries the report data so the
// KBS can check the nonce and key binding. A KBS must not release secrets to
// it unless its policy explicitly allows the sample TEE.
package sample
