/* Classify one handwritten digit with a header exported by qmtik.

   Build (after `qmtik export-c digits.qmt -o digits.h`):
       cc -std=c99 -O2 main.c -o classify -lm && ./classify
   For a microcontroller, compile main.c's calls into your firmware the same way; define
   DIGITS_NO_FLOAT there if you quantize inputs yourself and need no floating point. */
#define DIGITS_IMPLEMENTATION
#include "digits.h"

#include <stdio.h>

/* An 8x8 image of a 4 from the bundled digits (pixels 0..16, row by row). */
static const float sample[DIGITS_INPUTS] = {
    0, 0, 0, 1, 11, 0, 0, 0,    0, 0, 0, 7, 8, 0, 0, 0,
    0, 0, 1, 13, 6, 2, 2, 0,    0, 0, 7, 15, 0, 9, 8, 0,
    0, 5, 16, 10, 0, 16, 6, 0,  0, 4, 15, 16, 13, 16, 1, 0,
    0, 0, 0, 3, 15, 10, 0, 0,   0, 0, 0, 2, 16, 4, 0, 0,
};

int main(void)
{
    int8_t input[DIGITS_INPUTS], scores[DIGITS_OUTPUTS];
    int8_t scratch[DIGITS_SCRATCH_BYTES];      /* no malloc: the caller owns all memory */
    float probabilities[DIGITS_OUTPUTS];
    int digit;

    digits_quantize_input(sample, input);       /* raw pixels to int8, exactly as in Python */
    digit = digits_predict(input, scores, scratch);
    digits_probabilities(scores, probabilities);
    printf("digit %d (probability %.2f)\n", digit, (double)probabilities[digit]);
    return 0;
}
